"""Peer exchange: keep enough voting peers for consensus to stay live.

A poll samples k nodes from this node's voters plus itself, and a vertex
changes preference only with ``alpha_preference`` votes. A node whose only
voter is the peer it bootstrapped from has a population of two, so when the
two prefer different members of a conflict set, every poll splits one to one
and neither ever moves. Nodes that all bootstrap from one node form such a
star unless something connects the leaves.

The p2p layer deliberately does not connect every node to every other, because
that would multiply gossip copies. This service connects nodes only up to a
target. While a node has fewer than ``consensus.min_voters`` voters, it
requests the voter list of a random voter over request/response and dials
some of those peers.
A node whose listen addresses are all loopback dials only loopback addresses,
so addresses that a peer reports never make a local testnet reach outside
the machine.

Public API::

    PeerExchange(node).start()
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any, Final

import trio

if TYPE_CHECKING:
    from node.runtime import Node

log = logging.getLogger(__name__)

PEERS_METHOD: Final = "dag.peers"
MAX_PEERS_PER_REPLY: Final = 32
MAX_ADDRS_PER_PEER: Final = 8
EXCHANGE_INTERVAL_S: Final = 1.0


class PeerExchange:
    """Serves this node's voters to peers and dials theirs while below target."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.target = node.config.consensus.min_voters
        self._loopback_only = all(_is_loopback(addr) for addr in node.config.p2p.listen)
        self._failed: set[str] = set()

    def start(self) -> None:
        self.node.p2p.reqresp.set_handler(PEERS_METHOD, self._handle_peers)
        self.node.start_service("dag.peering", self._run)

    async def _handle_peers(self, peer: str, request: dict) -> dict:
        peers = []
        for voter in sorted(self.node.dag.voters()):
            if voter == peer:
                continue
            addrs = _peer_addrs(self.node, voter)[:MAX_ADDRS_PER_PEER]
            if addrs:
                peers.append({"peer_id": voter, "addrs": addrs})
            if len(peers) >= MAX_PEERS_PER_REPLY:
                break
        return {"peers": peers}

    async def _run(self) -> None:
        while True:
            await trio.sleep(EXCHANGE_INTERVAL_S)
            voters = sorted(self.node.dag.voters())
            if not voters or len(voters) >= self.target:
                continue
            source = self.node.rng.choice(voters)
            await self._top_up(source, set(voters))

    async def _top_up(self, source: str, voters: set[str]) -> None:
        from p2p import P2PError

        try:
            reply = await self.node.p2p.reqresp.request(
                source, PEERS_METHOD, {}, self.node.config.p2p.connect_timeout_s
            )
        except P2PError as error:
            log.info("peer exchange failed peer_id=%s error=%s", source, error)
            return
        candidates = self._candidates(source, reply, voters)
        missing = self.target - len(voters)
        for peer_id, address in candidates[:missing]:
            try:
                await self.node.p2p.connect(
                    address, self.node.config.p2p.connect_timeout_s
                )
            except P2PError as error:
                # Not retried: the p2p layer redials peers it once reached.
                self._failed.add(peer_id)
                log.info(
                    "exchanged peer dial failed peer_id=%s error=%s", peer_id, error
                )
                continue
            log.info("peer dialed from exchange peer_id=%s via=%s", peer_id, source)

    def _candidates(
        self, source: str, reply: Any, voters: set[str]
    ) -> list[tuple[str, str]]:
        peers = reply.get("peers") if isinstance(reply, dict) else None
        if not isinstance(peers, list) or len(peers) > MAX_PEERS_PER_REPLY:
            log.warning(
                "peer misbehaved peer_id=%s reason=malformed peer exchange reply",
                source,
            )
            self.node.p2p.guard.report(source, "malformed peer exchange reply")
            return []
        connected = set(self.node.p2p.connected_peers())
        found = []
        for entry in peers:
            if not isinstance(entry, dict):
                continue
            peer_id, addrs = entry.get("peer_id"), entry.get("addrs")
            if not isinstance(peer_id, str) or not isinstance(addrs, list):
                continue
            if peer_id == self.node.peer_id or peer_id in connected | voters:
                continue
            if peer_id in self._failed:
                continue
            for addr in addrs[:MAX_ADDRS_PER_PEER]:
                if not isinstance(addr, str):
                    continue
                if self._loopback_only and not _is_loopback(addr):
                    continue
                if not addr.endswith(f"/p2p/{peer_id}"):
                    addr = f"{addr}/p2p/{peer_id}"
                found.append((peer_id, addr))
                break
        self.node.rng.shuffle(found)
        return found


def _is_loopback(addr: str) -> bool:
    parts = addr.split("/")
    if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
        return False
    try:
        return ipaddress.ip_address(parts[2]).is_loopback
    except ValueError:
        return False


def _peer_addrs(node: Node, peer: str) -> list[str]:
    from libp2p.peer.id import ID
    from libp2p.peer.peerstore import PeerStoreError

    try:
        addrs = node.p2p.host.get_peerstore().addrs(ID.from_base58(peer))
    except PeerStoreError:
        return []
    return sorted(str(addr) for addr in addrs)
