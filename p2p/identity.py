"""Persistent Ed25519 libp2p identity.

The libp2p peer id is derived from the host's public key, so a node keeps its
peer id across restarts only if it keeps its private key. The key lives in one
file holding the libp2p protobuf encoding of the private key (the same bytes
go-libp2p writes), created with mode 0600 and replaced atomically.

Public API:
    load_or_create_identity(path: Path) -> KeyPair
    load_identity(path: Path) -> KeyPair
    save_identity(key_pair: KeyPair, path: Path) -> None
    peer_id_of(key_pair: KeyPair) -> str
    IdentityError(P2PError)
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.peer.id import ID

from p2p import P2PError

logger = logging.getLogger(__name__)

# A serialized Ed25519 private key is 68 bytes; anything far larger is not a
# key file and is rejected before it is read into memory.
_MAX_KEY_FILE_BYTES = 4096


class IdentityError(P2PError):
    """The identity file is missing, unreadable, too permissive or invalid."""


def peer_id_of(key_pair: KeyPair) -> str:
    """Return the base58 peer id that `key_pair` identifies."""
    return ID.from_pubkey(key_pair.public_key).to_base58()


def save_identity(key_pair: KeyPair, path: Path) -> None:
    """Write `key_pair` to `path` with mode 0600, replacing it atomically.

    Raises:
        IdentityError: if the key is not Ed25519.
    """
    if key_pair.private_key.get_type() != KeyType.Ed25519:
        raise IdentityError(
            f"identity key type {key_pair.private_key.get_type()} is not Ed25519"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    # O_EXCL with mode 0600 means no window where another user can read the key.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(key_pair.private_key.serialize())
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def load_identity(path: Path) -> KeyPair:
    """Read an Ed25519 identity from `path`.

    Raises:
        IdentityError: if the file is missing, readable by group or others,
            too large, or does not contain an Ed25519 private key.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise IdentityError(f"identity file {path} not found") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"identity file {path} has mode {stat.S_IMODE(info.st_mode):o}; "
            f"it holds a private key, run `chmod 600 {path}`"
        )
    if info.st_size > _MAX_KEY_FILE_BYTES:
        raise IdentityError(
            f"identity file {path} is {info.st_size} bytes, "
            f"max is {_MAX_KEY_FILE_BYTES}; it is not a libp2p key file"
        )
    data = path.read_bytes()
    try:
        private_key = deserialize_private_key(data)
    except Exception as error:
        raise IdentityError(
            f"identity file {path} is not a libp2p private key: {error}; "
            "move it away to generate a new identity"
        ) from error
    if private_key.get_type() != KeyType.Ed25519:
        raise IdentityError(
            f"identity file {path} holds a {private_key.get_type()} key, "
            "expected Ed25519"
        )
    return KeyPair(private_key, private_key.get_public_key())


def load_or_create_identity(path: Path) -> KeyPair:
    """Load the identity at `path`, generating and saving one if absent."""
    path = Path(path)
    if path.exists():
        return load_identity(path)
    key_pair = create_new_key_pair()
    save_identity(key_pair, path)
    logger.info("identity created path=%s peer_id=%s", path, peer_id_of(key_pair))
    return key_pair
