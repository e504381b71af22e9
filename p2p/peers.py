"""Known peers: persisted, kept connected, redialed with backoff.

A peer becomes known when this node dials it successfully (`svc.connect`) or
when it is added with `PeerManager.add`. Peers that only dialed us are not
kept, because the address we see for them is an ephemeral source port. Known
peers are saved to `known_peers.json` in the state folder and redialed after
a restart.

`ReconnectPlanner` is the sans-IO core. It gets connection events with an
explicit `now` and returns `Dial` actions when a known peer is disconnected
and its backoff has passed. The delay starts at `initial_backoff` and doubles
per failed dial up to `max_backoff`, with +/-20 % jitter from the injected
`random.Random` so restarted nodes do not redial in lockstep. A successful
connection resets it. Banned peers are skipped until the ban ends.

`PeerManager` is the trio shell. It listens for py-libp2p connection events,
performs the dials (at most `max_parallel_dials` at once) and writes the file.
py-libp2p's own 60 s "negative cache" after a failed dial is not used by our
swarm (see `p2p.host`), so a redial is never refused because of an earlier
failure.

Public API:
    PeerParams(...) with validate()
    ReconnectPlanner(params, rng): on_added(peer, now), on_removed(peer),
        on_connected(peer, now), on_disconnected(peer, now),
        on_dial_failed(peer, now), on_banned(peer, until), on_tick(now) ->
        list[Dial], next_deadline() -> float, known() -> list[str]
    Dial(peer)
    PeerManager(svc, params=None): add(address) -> str, forget(peer_id),
        known_peers() -> dict[str, list[str]], async run(task_status)
    load_known_peers(path) -> dict[str, list[str]]
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import multiaddr
import trio
from libp2p.abc import INotifee
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr

logger = logging.getLogger(__name__)

KNOWN_PEERS_FILE: Final = "known_peers.json"
_FILE_VERSION: Final = 1
# A peerstore TTL long enough that addresses never expire while we use them.
_ADDR_TTL: Final = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class PeerParams:
    """Reconnect and persistence settings.

    Attributes:
        initial_backoff: seconds before the first redial after a disconnect.
        max_backoff: cap on the redial delay.
        max_known_peers: peers kept in the known set and file.
        max_parallel_dials: dials in flight at once.
        save_interval: min seconds between writes of the known-peers file.
    """

    initial_backoff: float = 0.5
    max_backoff: float = 60.0
    max_known_peers: int = 256
    max_parallel_dials: int = 8
    save_interval: float = 5.0

    def validate(self) -> None:
        """Check every field; raise `ValueError` naming the first bad one."""
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError(
                f"initial_backoff={self.initial_backoff} must be in "
                f"(0, max_backoff={self.max_backoff}]"
            )
        for name in ("max_known_peers", "max_parallel_dials"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.save_interval < 0:
            raise ValueError(f"save_interval={self.save_interval} must be >= 0")


@dataclass(frozen=True, slots=True)
class Dial:
    """Action: dial `peer` now."""

    peer: str


@dataclass(slots=True)
class _Plan:
    connected: bool = False
    dialing: bool = False
    failures: int = 0
    next_dial: float = math.inf
    banned_until: float = -math.inf


class ReconnectPlanner:
    """Sans-IO redial schedule for the known peers."""

    def __init__(self, params: PeerParams, rng: random.Random) -> None:
        params.validate()
        self._params = params
        self._rng = rng
        self._plans: dict[str, _Plan] = {}

    def known(self) -> list[str]:
        """Return the known peers, in the order they were added."""
        return list(self._plans)

    def on_added(self, peer: str, now: float) -> bool:
        """Make `peer` known; due for a dial now unless connected.

        Returns False when the known set is full and `peer` was not added.
        """
        if peer in self._plans:
            return True
        if len(self._plans) >= self._params.max_known_peers:
            return False
        self._plans[peer] = _Plan(next_dial=now)
        return True

    def on_removed(self, peer: str) -> None:
        """Forget `peer`; it is no longer redialed."""
        self._plans.pop(peer, None)

    def on_connected(self, peer: str, now: float) -> None:
        plan = self._plans.get(peer)
        if plan is not None:
            plan.connected = True
            plan.dialing = False
            plan.failures = 0
            plan.next_dial = math.inf

    def on_disconnected(self, peer: str, now: float) -> None:
        plan = self._plans.get(peer)
        if plan is not None and plan.connected:
            plan.connected = False
            plan.next_dial = now + self._delay(plan.failures)

    def on_dial_failed(self, peer: str, now: float) -> None:
        plan = self._plans.get(peer)
        if plan is not None:
            plan.dialing = False
            plan.failures += 1
            if not plan.connected:
                plan.next_dial = now + self._delay(plan.failures)

    def on_banned(self, peer: str, until: float) -> None:
        plan = self._plans.get(peer)
        if plan is not None:
            plan.banned_until = until
            plan.next_dial = max(plan.next_dial, until)

    def on_tick(self, now: float) -> list[Dial]:
        """Return the dials due at `now` and mark them in flight."""
        dials = []
        for peer, plan in self._plans.items():
            if plan.connected or plan.dialing or plan.next_dial > now:
                continue
            if now < plan.banned_until:
                plan.next_dial = plan.banned_until
                continue
            plan.dialing = True
            plan.next_dial = math.inf
            dials.append(Dial(peer))
        return dials

    def next_deadline(self) -> float:
        """Return when `on_tick` next has work (inf if never)."""
        return min((p.next_dial for p in self._plans.values()), default=math.inf)

    def _delay(self, failures: int) -> float:
        base = min(
            self._params.max_backoff,
            self._params.initial_backoff * 2 ** min(failures, 32),
        )
        return base * self._rng.uniform(0.8, 1.2)


def load_known_peers(path: Path) -> dict[str, list[str]]:
    """Read the known-peers file; a missing or invalid file gives {}.

    An invalid file is logged and renamed to `<name>.invalid` so the next
    save does not silently replace the evidence.
    """
    try:
        data = json.loads(Path(path).read_text())
        if data.get("version") != _FILE_VERSION:
            raise ValueError(f"version {data.get('version')!r} is not {_FILE_VERSION}")
        peers = data["peers"]
        result = {}
        for peer, addrs in peers.items():
            ID.from_base58(peer)
            result[peer] = [str(multiaddr.Multiaddr(a)) for a in addrs]
        return result
    except FileNotFoundError:
        return {}
    except Exception as error:
        broken = Path(path).with_name(Path(path).name + ".invalid")
        logger.warning(
            "known peers file invalid, moved aside path=%s moved_to=%s error=%r",
            path,
            broken,
            error,
        )
        os.replace(path, broken)
        return {}


def _save_known_peers(path: Path, peers: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"version": _FILE_VERSION, "peers": peers}, indent=1))
    os.replace(tmp, path)


class _Events(INotifee):
    def __init__(self, manager: PeerManager) -> None:
        self._manager = manager

    async def connected(self, network: Any, conn: Any) -> None:
        self._manager._on_connection_change(conn.muxed_conn.peer_id)

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._manager._on_connection_change(conn.muxed_conn.peer_id)

    async def opened_stream(self, network: Any, stream: Any) -> None:
        return None

    async def closed_stream(self, network: Any, stream: Any) -> None:
        return None

    async def listen(self, network: Any, multiaddr: Any) -> None:
        return None

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        return None


class PeerManager:
    """Keeps the known peers connected; the service runs it."""

    def __init__(
        self,
        svc: Any,
        params: PeerParams | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.params = params or PeerParams()
        self._svc = svc
        self._host = svc.host
        self._planner = ReconnectPlanner(self.params, rng or random.Random())
        self._addrs: dict[str, list[str]] = {}
        self._path = Path(svc.config.state_dir) / KNOWN_PEERS_FILE
        self._wake = trio.Event()
        self._dirty = False
        self._host.get_network().register_notifee(_Events(self))

    def known_peers(self) -> dict[str, list[str]]:
        """Return {peer id: addresses} of the peers kept connected."""
        return {p: list(self._addrs[p]) for p in self._planner.known()}

    def add(self, address: str) -> str:
        """Keep the peer at `address` (ending in /p2p/<id>) connected.

        Returns the peer id. Raises `ValueError` for an invalid address.
        """
        info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        peer = info.peer_id.to_base58()
        self._remember(peer, [str(a) for a in info.addrs])
        return peer

    def forget(self, peer_id: str) -> None:
        """Stop redialing `peer_id` and drop it from the file."""
        self._planner.on_removed(peer_id)
        if self._addrs.pop(peer_id, None) is not None:
            self._dirty = True
            self._wake.set()

    def _remember(self, peer: str, addrs: list[str]) -> None:
        if peer == self._svc.peer_id:
            return
        if not self._planner.on_added(peer, trio.current_time()):
            logger.warning(
                "known peers full, peer not kept peer_id=%s max=%d",
                peer,
                self.params.max_known_peers,
            )
            return
        merged = list(dict.fromkeys(addrs + self._addrs.get(peer, [])))[:8]
        if merged != self._addrs.get(peer):
            self._addrs[peer] = merged
            self._dirty = True
        if self._is_connected(peer):
            self._planner.on_connected(peer, trio.current_time())
        self._wake.set()

    def note_dialed(self, peer: str, addrs: list[str]) -> None:
        """Record that we dialed `peer` at `addrs`, so it is kept."""
        self._remember(peer, addrs)

    def _is_connected(self, peer: str) -> bool:
        conns = self._host.get_network().get_connections(ID.from_base58(peer))
        return any(not c.is_closed for c in conns)

    def _on_connection_change(self, peer_id: ID) -> None:
        peer = peer_id.to_base58()
        now = trio.current_time()
        if peer not in self._addrs:
            return
        if self._is_connected(peer):
            self._planner.on_connected(peer, now)
        else:
            self._planner.on_disconnected(peer, now)
            logger.info("known peer disconnected peer_id=%s", peer)
        self._wake.set()

    async def run(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Load the file, then redial and save until cancelled."""
        for peer, addrs in load_known_peers(self._path).items():
            self._remember(peer, addrs)
        self._dirty = False
        limiter = trio.CapacityLimiter(self.params.max_parallel_dials)
        last_save = -math.inf
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                now = trio.current_time()
                for dial in self._planner.on_tick(now):
                    nursery.start_soon(self._dial, dial.peer, limiter)
                if self._dirty and now - last_save >= self.params.save_interval:
                    self._save()
                    last_save = now
                deadline = self._planner.next_deadline()
                if self._dirty:
                    deadline = min(deadline, last_save + self.params.save_interval)
                self._wake = trio.Event()
                with trio.move_on_at(deadline):
                    await self._wake.wait()

    def _save(self) -> None:
        try:
            _save_known_peers(self._path, self.known_peers())
            self._dirty = False
        except OSError as error:
            logger.error("known peers not saved path=%s error=%r", self._path, error)

    async def _dial(self, peer: str, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            guard = self._svc.guard
            if guard.is_banned(peer):
                self._planner.on_dial_failed(peer, trio.current_time())
                self._planner.on_banned(peer, guard.scorer.banned_until(peer))
                self._wake.set()
                return
            addrs = [multiaddr.Multiaddr(a) for a in self._addrs.get(peer, [])]
            peer_id = ID.from_base58(peer)
            self._host.get_peerstore().add_addrs(peer_id, addrs, _ADDR_TTL)
            try:
                with trio.fail_after(self._svc.config.dial_timeout):
                    await self._host.connect(PeerInfo(peer_id, addrs))
            except Exception as error:
                self._planner.on_dial_failed(peer, trio.current_time())
                logger.info(
                    "redial failed peer_id=%s error=%s", peer, error.__cause__ or error
                )
            else:
                self._planner.on_connected(peer, trio.current_time())
                logger.info("known peer reconnected peer_id=%s", peer)
            self._wake.set()
