"""``synaptic-mesh init``: create a node's data directory."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from node import NodeError
from node.api import TOKEN_FILE, create_token
from node.commands._common import add_data_dir, data_dir_of
from node.config import CONFIG_FILE, load_config, render_config_toml
from node.runtime import IDENTITY_FILE, STORE_FILE, VERTEX_KEY_FILE

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "init",
        help="create a data directory: settings, keys, store and API token",
        description=(
            "Create a node's data directory: config.toml with every setting, the "
            "libp2p identity and the ML-DSA-65 vertex signing key (mode 0600), the "
            "DAG store and the control API token."
        ),
    )
    add_data_dir(parser)
    parser.add_argument(
        "--network",
        help="network name written into config.toml (default: local)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing identity, vertex key, config.toml and token",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    summary = init_data_dir(data_dir, network=args.network, force=args.force)
    print(f"data directory  {data_dir}")
    print(f"network         {summary['network']}")
    print(f"peer id         {summary['peer_id']}")
    print(f"vertex key id   {summary['key_id']}")
    print(f"start it with   synaptic-mesh start --data-dir {data_dir}")
    return 0


def init_data_dir(
    data_dir: Path, *, network: str | None, force: bool
) -> dict[str, str]:
    """Create the files of a node in `data_dir` and return its ids.

    Raises:
        NodeError: the directory already contains an identity and `force` is false,
            or the network name is invalid.
    """
    from dag.keys import SigningKey
    from dag.store import Store
    from p2p.identity import load_or_create_identity, peer_id_of

    if data_dir.exists() and not data_dir.is_dir():
        raise NodeError(
            f"data directory {data_dir} is a file, not a directory; "
            "pass --data-dir with a new or existing directory"
        )
    identity_path = data_dir / IDENTITY_FILE
    key_path = data_dir / VERTEX_KEY_FILE
    existing = [path for path in (identity_path, key_path) if path.exists()]
    if existing and not force:
        raise NodeError(
            f"{existing[0]} already exists; pass --force to replace the node's "
            "identity and vertex key (it gets a new peer id)"
        )

    # Validated before anything is written, so a bad name leaves no half-made
    # directory behind.
    overrides = {"node.network": network}
    config = load_config(data_dir, env={}, overrides=overrides, read_file=False)

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    except OSError as error:
        # A parent that is a file or not writable: say which path failed.
        raise NodeError(
            f"cannot create data directory {data_dir}: {error.strerror or error}"
        ) from None
    (data_dir / CONFIG_FILE).write_text(render_config_toml(config), encoding="utf-8")

    for path in existing:
        path.unlink()
    identity = load_or_create_identity(identity_path)
    signing_key = SigningKey.generate("ml-dsa-65")
    signing_key.save(key_path)
    create_token(data_dir / TOKEN_FILE)
    Store.open(data_dir / STORE_FILE, network=config.network).close()

    peer_id = peer_id_of(identity)
    log.info(
        "data directory created path=%s network=%s peer_id=%s",
        data_dir,
        config.network,
        peer_id,
    )
    return {
        "network": config.network,
        "peer_id": peer_id,
        "key_id": signing_key.key_id.hex(),
    }
