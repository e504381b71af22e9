"""Signing keys: schemes, self-certifying ids and key files."""

from __future__ import annotations

import os
import stat

import msgpack
import pytest

from dag.keys import (
    SCHEMES,
    InvalidKey,
    KeyFileError,
    PublicKey,
    SigningKey,
    UnknownScheme,
    key_id,
)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_sign_verify_roundtrip(scheme):
    key = SigningKey.generate(scheme)
    signature = key.sign(b"message")
    assert len(signature) == SCHEMES[scheme].signature_bytes
    assert len(key.public_key) == SCHEMES[scheme].public_key_bytes
    public = key.public()
    assert public.verify(b"message", signature)
    assert not public.verify(b"messagf", signature)
    assert not public.verify(b"message", signature[:-1])
    assert not public.verify(b"message", b"")
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not public.verify(b"message", tampered)


def test_default_scheme_is_mldsa65():
    assert SigningKey.generate().scheme == "ml-dsa-65"


def test_key_id_depends_on_scheme_and_key():
    key = SigningKey.generate("ed25519")
    assert key.key_id == key_id("ed25519", key.public_key)
    assert key.key_id != key_id("ml-dsa-65", key.public_key)
    assert PublicKey.from_bytes("ed25519", key.public_key).key_id == key.key_id


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("size_delta", [-1, 1])
def test_public_key_wrong_length_rejected(scheme, size_delta):
    size = SCHEMES[scheme].public_key_bytes + size_delta
    with pytest.raises(InvalidKey, match="must be"):
        PublicKey.from_bytes(scheme, b"\x01" * size)


def test_public_key_empty_and_huge_rejected():
    for data in (b"", b"\x00" * 100_000):
        with pytest.raises(InvalidKey):
            PublicKey.from_bytes("ml-dsa-65", data)


def test_unknown_scheme_rejected():
    with pytest.raises(UnknownScheme):
        PublicKey.from_bytes("rsa", b"\x00" * 32)
    with pytest.raises(UnknownScheme):
        SigningKey.generate("ml-dsa-44")


def test_seed_gives_same_key():
    seed = bytes(range(32))
    for scheme in SCHEMES:
        first = SigningKey.from_seed(scheme, seed)
        second = SigningKey.from_seed(scheme, seed)
        assert first.public_key == second.public_key


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_save_load_roundtrip_mode_0600(tmp_path, scheme):
    key = SigningKey.generate(scheme)
    path = tmp_path / "vertex.key"
    old_umask = os.umask(0)
    try:
        key.save(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = SigningKey.load(path)
    assert loaded.key_id == key.key_id
    assert loaded.public().verify(b"m", key.sign(b"m"))


def test_save_replaces_existing_file(tmp_path):
    path = tmp_path / "vertex.key"
    SigningKey.generate("ed25519").save(path)
    key = SigningKey.generate("ed25519")
    key.save(path)
    assert SigningKey.load(path).key_id == key.key_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vertex.key"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666])
def test_load_loose_permissions_rejected(tmp_path, mode):
    path = tmp_path / "vertex.key"
    SigningKey.generate("ed25519").save(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        SigningKey.load(path)


def _write_key_file(path, fields) -> None:
    path.write_bytes(msgpack.packb(fields, use_bin_type=True))
    path.chmod(0o600)


@pytest.mark.parametrize("seed_size", [0, 31, 33, 64])
def test_load_bad_seed_length_rejected(tmp_path, seed_size):
    path = tmp_path / "vertex.key"
    fields = {
        "format": "synaptic-mesh-signing-key",
        "version": 1,
        "scheme": "ml-dsa-65",
        "seed": b"\x01" * seed_size,
    }
    _write_key_file(path, fields)
    with pytest.raises(KeyFileError, match=f"{seed_size}-byte seed"):
        SigningKey.load(path)


def test_load_rejects_garbage_and_wrong_format(tmp_path):
    path = tmp_path / "vertex.key"
    path.write_bytes(b"\xc1garbage")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a signing key"):
        SigningKey.load(path)
    _write_key_file(path, {"format": "other"})
    with pytest.raises(KeyFileError, match="not a synaptic-mesh"):
        SigningKey.load(path)
    path.write_bytes(b"\x00" * 5000)
    with pytest.raises(KeyFileError, match="5000 bytes"):
        SigningKey.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(KeyFileError, match="cannot open"):
        SigningKey.load(tmp_path / "absent.key")


def test_repr_hides_seed():
    key = SigningKey.from_seed("ed25519", b"\x07" * 32)
    assert "07070707" not in repr(key)
