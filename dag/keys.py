"""Vertex signing keys: ML-DSA-65 by default, Ed25519 selectable.

A key id is SHA-256 over a domain tag, the scheme name and the raw public key
(``key_id``). A vertex names its author by key id only, so a node must learn
the public key once: any peer may send it (``dag.codec.encode_public_key``),
and the receiver recomputes the id from the bytes it got. A fetched key is
therefore self-certifying, and a peer that lies about a key simply sends one
whose id matches nothing that waits for it.

Schemes (name, public key bytes, signature bytes):

- ``ml-dsa-65``: FIPS 204 ML-DSA-65 through ``cryptography`` (1952, 3309).
  Signatures are randomized, so signing one message twice gives two
  different signatures; both verify.
- ``ed25519``: RFC 8032 Ed25519 through PyNaCl (32, 64).

Both schemes derive the private key from a 32-byte seed, and a key file stores
only the scheme and that seed, as canonical msgpack, with mode 0600.

Public API:
    ``SigningKey.generate(scheme: str = "ml-dsa-65") -> SigningKey``
    ``SigningKey.from_seed(scheme: str, seed: bytes) -> SigningKey``
    ``SigningKey.load(path) -> SigningKey``, ``SigningKey.save(path) -> None``
    ``SigningKey.scheme``, ``.public_key`` (bytes), ``.key_id`` (32 bytes),
    ``.sign(message: bytes) -> bytes``, ``.public() -> PublicKey``
    ``PublicKey.from_bytes(scheme: str, data: bytes) -> PublicKey``
    ``PublicKey.scheme``, ``.key`` (bytes), ``.key_id``,
    ``.verify(message: bytes, signature: bytes) -> bool``
    ``key_id(scheme: str, public_key: bytes) -> bytes``
    ``SCHEMES``, ``DEFAULT_SCHEME``; errors ``InvalidKey``, ``UnknownScheme``,
    ``KeyFileError`` (all ``DagError``).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidSignature
from nacl.exceptions import BadSignatureError

from dag import DagError

DEFAULT_SCHEME: Final = "ml-dsa-65"
SEED_BYTES: Final = 32
KEY_FILE_FORMAT: Final = "synaptic-mesh-signing-key"
KEY_FILE_VERSION: Final = 1
# A key file is a few dozen bytes; anything much larger is not one of ours.
_MAX_KEY_FILE_BYTES: Final = 1024
_KEY_ID_TAG: Final = b"synaptic-mesh key id\x00"


@dataclass(frozen=True, slots=True)
class SchemeInfo:
    """Sizes of one signature scheme, in bytes."""

    name: str
    public_key_bytes: int
    signature_bytes: int


SCHEMES: Final[dict[str, SchemeInfo]] = {
    "ml-dsa-65": SchemeInfo("ml-dsa-65", 1952, 3309),
    "ed25519": SchemeInfo("ed25519", 32, 64),
}


class InvalidKey(DagError):
    """Raised for public key bytes that are not a valid key of their scheme."""


class UnknownScheme(InvalidKey):
    """Raised for a signature scheme name this node does not support."""


class KeyFileError(DagError):
    """Raised when a key file cannot be read, has loose permissions or bad contents."""


def scheme_info(scheme: str) -> SchemeInfo:
    """Return the sizes of ``scheme``, raising ``UnknownScheme`` if unsupported."""
    info = SCHEMES.get(scheme)
    if info is None:
        raise UnknownScheme(
            f"unknown signature scheme {scheme!r}; known: {sorted(SCHEMES)}"
        )
    return info


def key_id(scheme: str, public_key: bytes) -> bytes:
    """Return the 32-byte id of a public key: SHA-256 of tag, scheme and key."""
    digest = hashlib.sha256(_KEY_ID_TAG)
    digest.update(scheme.encode("ascii"))
    digest.update(b"\x00")
    digest.update(public_key)
    return digest.digest()


def _load_public(scheme: str, data: bytes) -> Any:
    if scheme == "ml-dsa-65":
        from cryptography.hazmat.primitives.asymmetric import mldsa

        return mldsa.MLDSA65PublicKey.from_public_bytes(data)
    import nacl.signing

    return nacl.signing.VerifyKey(data)


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A parsed public key; build it with ``PublicKey.from_bytes``."""

    scheme: str
    key: bytes
    key_id: bytes
    _impl: Any = field(repr=False, compare=False)

    @classmethod
    def from_bytes(cls, scheme: str, data: bytes) -> PublicKey:
        """Parse raw public key bytes of ``scheme``.

        Raises:
            UnknownScheme: the scheme is not supported.
            InvalidKey: the bytes have the wrong length or are not a valid key.
        """
        info = scheme_info(scheme)
        if not isinstance(data, bytes) or len(data) != info.public_key_bytes:
            size = len(data) if isinstance(data, (bytes, bytearray)) else None
            raise InvalidKey(
                f"{scheme} public key must be {info.public_key_bytes} bytes, got {size}"
            )
        try:
            impl = _load_public(scheme, data)
        except ValueError as exc:
            # PyNaCl's own ValueError subclasses the built-in one.
            raise InvalidKey(f"invalid {scheme} public key: {exc}") from None
        return cls(scheme, data, key_id(scheme, data), impl)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is valid for ``message``; never raises."""
        if len(signature) != SCHEMES[self.scheme].signature_bytes:
            return False
        try:
            if self.scheme == "ml-dsa-65":
                self._impl.verify(signature, message)
            else:
                self._impl.verify(message, signature)
        except (InvalidSignature, BadSignatureError, ValueError):
            return False
        return True


def _load_private(scheme: str, seed: bytes) -> tuple[Any, bytes]:
    """Return the library key object and raw public key for a seed."""
    if scheme == "ml-dsa-65":
        from cryptography.hazmat.primitives.asymmetric import mldsa

        private = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)
        return private, private.public_key().public_bytes_raw()
    import nacl.signing

    private = nacl.signing.SigningKey(seed)
    return private, bytes(private.verify_key)


class SigningKey:
    """A private signing key with its scheme, public key and key id."""

    __slots__ = ("_impl", "_seed", "key_id", "public_key", "scheme")

    def __init__(self, scheme: str, seed: bytes) -> None:
        scheme_info(scheme)
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise ValueError(f"seed must be {SEED_BYTES} bytes")
        self.scheme = scheme
        self._seed = seed
        self._impl, self.public_key = _load_private(scheme, seed)
        self.key_id = key_id(scheme, self.public_key)

    def __repr__(self) -> str:
        return f"SigningKey(scheme={self.scheme!r}, key_id={self.key_id.hex()})"

    @classmethod
    def generate(cls, scheme: str = DEFAULT_SCHEME) -> SigningKey:
        """Create a new key from 32 bytes of ``os.urandom``."""
        return cls(scheme, os.urandom(SEED_BYTES))

    @classmethod
    def from_seed(cls, scheme: str, seed: bytes) -> SigningKey:
        """Derive a key from a 32-byte seed (tests and deterministic fixtures)."""
        return cls(scheme, seed)

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``; the result has the scheme's signature length."""
        if self.scheme == "ml-dsa-65":
            return self._impl.sign(message)
        return self._impl.sign(message).signature

    def public(self) -> PublicKey:
        """Return the matching parsed public key."""
        return PublicKey.from_bytes(self.scheme, self.public_key)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key to ``path`` with mode 0600, replacing it atomically.

        The file is written beside ``path`` under a temporary name, synced and
        renamed, so a crash leaves either the old file or the new one.
        """
        path = Path(path)
        data = msgpack.packb(
            {
                "format": KEY_FILE_FORMAT,
                "version": KEY_FILE_VERSION,
                "scheme": self.scheme,
                "seed": self._seed,
            },
            use_bin_type=True,
        )
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # O_CREAT's mode is filtered by the umask, and an old temp file
            # keeps its mode, so set it explicitly.
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        # Sync the directory too, so the rename itself survives a power cut.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        """Read a key file written by ``save``.

        Raises:
            KeyFileError: the file is missing, readable by group or others,
                too large, or does not contain a valid key of a known scheme.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise KeyFileError(f"cannot open key file {path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise KeyFileError(
                    f"key file {path} has mode {mode:04o} and is readable by other "
                    f"users; run `chmod 600 {path}` if the key was not exposed, "
                    "otherwise create a new key"
                )
            if info.st_size > _MAX_KEY_FILE_BYTES:
                raise KeyFileError(
                    f"key file {path} is {info.st_size} bytes, a key file is at "
                    f"most {_MAX_KEY_FILE_BYTES}; it is not a signing key"
                )
            data = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
        finally:
            os.close(fd)
        return cls(*_parse_key_file(path, data))


def _parse_key_file(path: Path, data: bytes) -> tuple[str, bytes]:
    try:
        fields = msgpack.unpackb(data, raw=False, max_bin_len=64, max_str_len=64)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise KeyFileError(f"key file {path} is not a signing key: {exc}") from None
    if not isinstance(fields, dict) or fields.get("format") != KEY_FILE_FORMAT:
        raise KeyFileError(f"key file {path} is not a synaptic-mesh signing key")
    if fields.get("version") != KEY_FILE_VERSION:
        raise KeyFileError(
            f"key file {path} has format version {fields.get('version')!r}, "
            f"this program reads version {KEY_FILE_VERSION}"
        )
    scheme = fields.get("scheme")
    if scheme not in SCHEMES:
        raise KeyFileError(f"key file {path} names unknown scheme {scheme!r}")
    seed = fields.get("seed")
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        size = len(seed) if isinstance(seed, bytes) else None
        raise KeyFileError(
            f"key file {path} holds a {size}-byte seed, expected {SEED_BYTES}; "
            "the file is damaged"
        )
    return scheme, seed
