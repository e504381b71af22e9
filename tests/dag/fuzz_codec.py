"""Coverage-guided fuzzing of the decoders with atheris (libFuzzer).

Run as ``python -m tests.dag.fuzz_codec [libFuzzer flags] [CORPUS_DIR]``. Any
exception other than ``DecodeError`` from a decoder, or an accepted input that
does not re-encode to the same bytes, is a crash that libFuzzer reports and
saves. ``test_codec_atheris.py`` runs this with bounded runs and memory.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from dag import codec


def fuzz_one(data: bytes) -> None:
    try:
        vertex = codec.decode_vertex(data)
    except codec.DecodeError:
        pass
    else:
        if codec.encode_vertex(vertex) != data:
            raise AssertionError("accepted vertex bytes are not canonical")
    try:
        payload = codec.decode_payload(data)
    except codec.DecodeError:
        pass
    else:
        if codec.encode_payload(payload) != data:
            raise AssertionError("accepted payload bytes are not canonical")
    try:
        scheme, key = codec.decode_public_key(data)
    except codec.DecodeError:
        pass
    else:
        if codec.encode_public_key(scheme, key) != data:
            raise AssertionError("accepted key message is not canonical")


def main() -> None:
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
