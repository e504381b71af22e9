"""Node settings: defaults, ``config.toml``, environment variables and flags.

Every setting lives in one frozen section dataclass below, with its default, a
help line (written into ``config.toml`` by ``init``) and, for numbers, its
allowed range. Values are merged in this order, later sources winning:

1. the defaults in this module;
2. ``config.toml`` in the data directory;
3. ``SYNAPTIC_MESH_<SECTION>_<NAME>`` environment variables (for example
   ``SYNAPTIC_MESH_CONSENSUS_K=7``; lists are comma-separated);
4. command-line flags.

:func:`load_config` validates the merged result once. An invalid value raises
:class:`ConfigError` naming the setting, the value, where it came from and the
allowed range, so a daemon never starts half-configured.

Public API::

    resolve_data_dir(flag: str | None, env=os.environ) -> Path
    load_config(data_dir, *, env=os.environ, overrides={}) -> Config
    render_config_toml(config: Config) -> str
    Config.network, Config.p2p, Config.api, Config.metrics, Config.consensus,
    Config.daemon, Config.data_dir
    ConfigError(NodeError)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import textwrap
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from node import NodeError

HOME_ENV: Final = "SYNAPTIC_MESH_HOME"
ENV_PREFIX: Final = "SYNAPTIC_MESH_"
DEFAULT_HOME: Final = "~/.synaptic-mesh"
CONFIG_FILE: Final = "config.toml"
# Read by other modules, so not rejected as unknown: node.inference reads the
# task service settings from these.
_OTHER_ENV_PREFIXES: Final = ("SYNAPTIC_MESH_TASKS_",)

# Names end up inside protocol ids, topics and DHT keys, so they are limited to
# characters that need no escaping in a multistream protocol id.
_NETWORK_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")


class ConfigError(NodeError):
    """A setting is missing, malformed or outside its allowed range."""


def _setting(
    default: Any, help: str, *, lo: float | None = None, hi: float | None = None
):
    # The metadata drives both the generic range check and the comments that
    # `init` writes into config.toml, so the two never drift apart.
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi})


class _Section:
    """Shared checks for the section dataclasses."""

    def validate(self) -> None:
        """Check every numeric setting against its declared range."""
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            lo, hi = spec.metadata.get("lo"), spec.metadata.get("hi")
            if lo is not None and value < lo or hi is not None and value > hi:
                raise _Invalid(spec.name, value, f"must be from {lo} to {hi}")


class _Invalid(Exception):
    """Raised by ``validate()``; :func:`load_config` adds section and source."""

    def __init__(self, name: str, value: object, rule: str) -> None:
        super().__init__(name, value, rule)
        self.name = name
        self.value = value
        self.rule = rule


@dataclass(frozen=True, slots=True)
class NodeSettings(_Section):
    network: str = _setting(
        "local",
        "network name; it goes into every protocol id, topic and DHT key, so "
        "nodes only talk to nodes of the same network",
    )

    def validate(self) -> None:
        if not _NETWORK_RE.match(self.network):
            raise _Invalid(
                "network",
                self.network,
                "must be 1 to 32 characters of a-z, 0-9, '.', '_' or '-', "
                "starting with a letter or digit",
            )


@dataclass(frozen=True, slots=True)
class P2PSettings(_Section):
    listen: tuple[str, ...] = _setting(
        ("/ip4/127.0.0.1/tcp/0",),
        "libp2p listen multiaddrs; tcp port 0 picks a free port at start",
    )
    bootstrap: tuple[str, ...] = _setting(
        (),
        "multiaddrs ending in /p2p/<peer id> to dial at start (empty: none)",
    )
    max_connections: int = _setting(
        64, "maximum number of open libp2p connections", lo=1, hi=10_000
    )
    connect_timeout_s: float = _setting(
        10.0, "seconds to wait for one bootstrap dial", lo=0.1, hi=300.0
    )

    def validate(self) -> None:
        _Section.validate(self)
        if not self.listen:
            raise _Invalid(
                "listen", list(self.listen), "must name at least one address"
            )
        for addr in self.listen:
            _check_multiaddr("listen", addr, need_peer_id=False)
        for addr in self.bootstrap:
            _check_multiaddr("bootstrap", addr, need_peer_id=True)


@dataclass(frozen=True, slots=True)
class ApiSettings(_Section):
    listen: str = _setting(
        "127.0.0.1:0",
        "HOST:PORT of the control API (loopback only; port 0 picks a free port)",
    )
    request_timeout_s: float = _setting(
        30.0, "seconds the CLI waits for one API call", lo=0.1, hi=3600.0
    )

    def validate(self) -> None:
        _Section.validate(self)
        _check_host_port("listen", self.listen, allow_off=False)


@dataclass(frozen=True, slots=True)
class MetricsSettings(_Section):
    listen: str = _setting(
        "127.0.0.1:0",
        "HOST:PORT serving Prometheus /metrics (loopback only; 'off' disables it)",
    )

    def validate(self) -> None:
        _check_host_port("listen", self.listen, allow_off=True)


@dataclass(frozen=True, slots=True)
class ConsensusSettings(_Section):
    # avalanchego's defaults (k=20, alpha=15, beta=20) assume hundreds of
    # validators. Polls sample k nodes from the peers plus the node itself and
    # need at least alpha_preference of them, so k=3 with alphas of 2 lets two
    # nodes agree and is a 2-of-3 majority sample in a 5-10 node testnet.
    k: int = _setting(
        3,
        "nodes sampled per poll, this node included (fewer when fewer are connected)",
        lo=1,
        hi=1000,
    )
    alpha_preference: int = _setting(
        2, "votes in one poll that change a preference", lo=1, hi=1000
    )
    alpha_confidence: int = _setting(
        2, "votes in one poll that count towards confidence", lo=1, hi=1000
    )
    # With k=3 a poll needs only one other node's vote, so beta carries the
    # safety margin: in `synaptic-mesh simulate` runs of 10 nodes with half
    # of the vertices conflicting and 50 ms + up to 1.5 s of jitter, beta=8
    # let two honest nodes accept different vertices in 1 of 120 seeds and
    # beta=12 in none (an estimate from 120 seeds, not a bound).
    beta: int = _setting(
        12, "consecutive successful polls that accept a vertex", lo=1, hi=1000
    )
    concurrent_repolls: int = _setting(
        4, "polls kept in flight while vertices are processing", lo=1, hi=1000
    )
    min_voters: int = _setting(
        4,
        "voting peers this node dials towards, learned from its peers; at least 2 "
        "lets a poll break a tie between two preferences",
        lo=1,
        hi=1000,
    )
    max_parents: int = _setting(
        8, "maximum parents a new vertex names (admission allows 16)", lo=1, hi=16
    )
    max_processing: int = _setting(
        4096, "maximum vertices undecided at once", lo=1, hi=1_000_000
    )
    poll_timeout_s: float = _setting(
        2.0, "seconds before an unanswered poll counts as failed", lo=0.01, hi=600.0
    )

    def validate(self) -> None:
        _Section.validate(self)
        # Each poll needs a majority of k, and confidence may not count votes
        # that would not even change a preference.
        if self.alpha_preference <= self.k // 2:
            raise _Invalid(
                "alpha_preference",
                self.alpha_preference,
                f"must exceed k/2={self.k // 2}",
            )
        if self.alpha_preference > self.k:
            raise _Invalid(
                "alpha_preference", self.alpha_preference, f"must be at most k={self.k}"
            )
        if self.alpha_confidence < self.alpha_preference:
            raise _Invalid(
                "alpha_confidence",
                self.alpha_confidence,
                f"must be at least alpha_preference={self.alpha_preference}",
            )
        if self.alpha_confidence > self.k:
            raise _Invalid(
                "alpha_confidence", self.alpha_confidence, f"must be at most k={self.k}"
            )
        if self.concurrent_repolls > self.beta:
            raise _Invalid(
                "concurrent_repolls",
                self.concurrent_repolls,
                f"must be at most beta={self.beta}",
            )


@dataclass(frozen=True, slots=True)
class DaemonSettings(_Section):
    shutdown_timeout_s: float = _setting(
        5.0,
        "seconds a graceful stop may take before the daemon exits anyway",
        lo=0.1,
        hi=600.0,
    )
    service_restart_delay_s: float = _setting(
        1.0,
        "seconds before a crashed service is restarted (doubles per crash, max 30)",
        lo=0.0,
        hi=60.0,
    )


_SECTIONS: Final[dict[str, type]] = {
    "node": NodeSettings,
    "p2p": P2PSettings,
    "api": ApiSettings,
    "metrics": MetricsSettings,
    "consensus": ConsensusSettings,
    "daemon": DaemonSettings,
}


@dataclass(frozen=True, slots=True)
class Config:
    """The validated settings of one node."""

    data_dir: Path
    node: NodeSettings = NodeSettings()
    p2p: P2PSettings = P2PSettings()
    api: ApiSettings = ApiSettings()
    metrics: MetricsSettings = MetricsSettings()
    consensus: ConsensusSettings = ConsensusSettings()
    daemon: DaemonSettings = DaemonSettings()

    @property
    def network(self) -> str:
        return self.node.network

    def path(self, name: str) -> Path:
        """Return the path of file `name` inside the data directory."""
        return self.data_dir / name


def resolve_data_dir(flag: str | None, env: Mapping[str, str] = os.environ) -> Path:
    """Return the data directory: the flag, else ``$SYNAPTIC_MESH_HOME``, else home."""
    raw = flag or env.get(HOME_ENV) or DEFAULT_HOME
    return Path(raw).expanduser().absolute()


def load_config(
    data_dir: Path,
    *,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, object] | None = None,
    read_file: bool = True,
) -> Config:
    """Merge defaults, ``config.toml``, environment and `overrides`, then validate.

    Args:
        data_dir: the node's data directory.
        env: environment variables to read ``SYNAPTIC_MESH_*`` settings from.
        overrides: values from flags, keyed ``"section.name"``; ``None`` values
            are ignored so that unset flags do not hide the other sources.
        read_file: read ``config.toml`` when it exists.

    Raises:
        ConfigError: a value is malformed or out of range, a key is unknown, or
            the file is not valid TOML.
    """
    values: dict[str, dict[str, object]] = {name: {} for name in _SECTIONS}
    sources: dict[str, str] = {}
    config_path = data_dir / CONFIG_FILE

    if read_file and config_path.exists():
        try:
            document = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as error:
            raise ConfigError(f"cannot read {config_path}: {error}") from None
        _merge_file(document, values, sources, str(config_path))

    _merge_env(env, values, sources)

    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, name = key.split(".", 1)
        values[section][name] = _coerce(section, name, value, "flag")
        sources[key] = "command-line flag"

    sections = {}
    for section, cls in _SECTIONS.items():
        instance = cls(**values[section])
        try:
            instance.validate()
        except _Invalid as bad:
            key = f"{section}.{bad.name}"
            source = sources.get(key, "default")
            raise ConfigError(
                f"invalid setting {key}={bad.value!r} (from {source}): {bad.rule}"
            ) from None
        sections[section] = instance
    return Config(data_dir=data_dir, **sections)


def render_config_toml(config: Config) -> str:
    """Render every setting with its help line, as ``init`` stores it."""
    lines = [
        "# Synaptic Mesh node settings. Every setting is listed with its value;",
        "# SYNAPTIC_MESH_<SECTION>_<NAME> environment variables and command-line",
        "# flags override this file.",
    ]
    for section in _SECTIONS:
        lines += ["", f"[{section}]"]
        instance = getattr(config, section)
        for spec in dataclasses.fields(instance):
            help_line = spec.metadata["help"]
            lo, hi = spec.metadata.get("lo"), spec.metadata.get("hi")
            if lo is not None:
                help_line += f" ({lo} to {hi})"
            lines += textwrap.wrap(
                help_line, 86, initial_indent="# ", subsequent_indent="# "
            )
            lines.append(f"{spec.name} = {_toml_value(getattr(instance, spec.name))}")
    return "\n".join(lines) + "\n"


def _merge_file(document, values, sources, origin: str) -> None:
    for section, table in document.items():
        if section not in _SECTIONS or not isinstance(table, dict):
            raise ConfigError(
                f"unknown section [{section}] in {origin}; "
                f"known sections: {', '.join(_SECTIONS)}"
            )
        for name, value in table.items():
            values[section][name] = _coerce(section, name, value, origin)
            sources[f"{section}.{name}"] = origin


def _merge_env(env: Mapping[str, str], values, sources) -> None:
    known = {
        f"{ENV_PREFIX}{section}_{spec.name}".upper()
        for section, cls in _SECTIONS.items()
        for spec in dataclasses.fields(cls)
    }
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in known:
            continue
        if var == HOME_ENV or var.startswith(_OTHER_ENV_PREFIXES):
            continue
        # A misspelt variable would otherwise be ignored without a word, as
        # an unknown key in config.toml is not.
        raise ConfigError(
            f"unknown environment variable {var}; settings are read from "
            f"{ENV_PREFIX}<SECTION>_<NAME>, for example "
            f"{ENV_PREFIX}CONSENSUS_K (sections: {', '.join(_SECTIONS)}), "
            f"and {HOME_ENV} selects the data directory"
        )
    for section in _SECTIONS:
        for spec in dataclasses.fields(_SECTIONS[section]):
            var = f"{ENV_PREFIX}{section}_{spec.name}".upper()
            if var in env:
                origin = f"environment variable {var}"
                values[section][spec.name] = _coerce(
                    section, spec.name, env[var], origin
                )
                sources[f"{section}.{spec.name}"] = origin


def _coerce(section: str, name: str, value: object, origin: str) -> object:
    """Convert `value` to the declared type of ``section.name``."""
    cls = _SECTIONS[section]
    specs = {spec.name: spec for spec in dataclasses.fields(cls)}
    if name not in specs:
        raise ConfigError(
            f"unknown setting {section}.{name} in {origin}; "
            f"known: {', '.join(sorted(specs))}"
        )
    default = specs[name].default
    key = f"{section}.{name}"
    try:
        if isinstance(default, tuple):
            if isinstance(value, str):
                return tuple(item.strip() for item in value.split(",") if item.strip())
            if isinstance(value, (list, tuple)) and all(
                isinstance(item, str) for item in value
            ):
                return tuple(value)
            raise ValueError("expected a list of strings")
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no"):
                return False
            raise ValueError("expected true or false")
        if isinstance(default, int):
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
                return int(value)
            raise ValueError("expected an integer")
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError("expected a number")
            try:
                number = float(value)
            except ValueError:
                raise ValueError("expected a number") from None
            if not math.isfinite(number):
                raise ValueError("expected a finite number")
            return number
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"invalid setting {key}={value!r} (from {origin}): {error}"
        ) from None


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_string(item) for item in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _check_multiaddr(name: str, addr: str, *, need_peer_id: bool) -> None:
    # Imported here: multiaddr pulls in parsing tables that commands which
    # never start a daemon should not pay for.
    from multiaddr import Multiaddr

    try:
        parsed = Multiaddr(addr)
    except Exception as error:  # multiaddr raises several unrelated types
        raise _Invalid(name, addr, f"is not a valid multiaddr ({error})") from None
    protocols = [proto.name for proto in parsed.protocols()]
    if "tcp" not in protocols:
        raise _Invalid(
            name, addr, "must be a TCP multiaddr such as /ip4/127.0.0.1/tcp/4001"
        )
    if need_peer_id and protocols[-1] != "p2p":
        raise _Invalid(name, addr, "must end in /p2p/<peer id>, as `start` prints it")


def _check_host_port(name: str, text: str, *, allow_off: bool) -> None:
    if allow_off and text == "off":
        return
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _Invalid(name, text, "must be HOST:PORT with a port from 0 to 65535")
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # The API authenticates with a bearer token over plain HTTP, which is
        # only safe when the socket cannot be reached from another machine.
        raise _Invalid(name, text, "must be a loopback address such as 127.0.0.1")


def split_host_port(text: str) -> tuple[str, int]:
    """Split a validated ``HOST:PORT`` into its parts."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)
