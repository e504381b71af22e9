"""Conflict-set tries and bitset vote counting for `dag.consensus`.

Internal to the engine; nothing here is part of the package's public API.

Vote counting works on Python ints used as bitsets. Each processing vertex
owns one bit, and its ancestor mask has the bits of itself and its processing
ancestors, so a reply's votes become one mask (the OR of the voted vertices'
masks). Per-vertex vote counts are kept bit-sliced: ``planes[i]`` contains bit i
of every vertex's count. Adding a reply and comparing all counts with a
threshold then costs a few big-int operations instead of a walk over the DAG.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol


class _Member(Protocol):
    order: int


def order_key(vertex_id: object) -> int:
    """Return the integer whose bits place `vertex_id` in a conflict trie.

    Raises:
        TypeError: for ids other than bytes, int or str, whose bits would not
            be the same on every node.
    """
    if isinstance(vertex_id, int):
        return vertex_id
    if isinstance(vertex_id, bytes):
        return int.from_bytes(vertex_id, "big")
    if isinstance(vertex_id, str):
        return int.from_bytes(vertex_id.encode(), "big")
    raise TypeError(f"vertex id {vertex_id!r} must be bytes, int or str")


def _split(members: list) -> tuple[int, list, list]:
    """Split members on their highest differing bit; return (bit, zeros, ones)."""
    base = members[0].order
    diff = 0
    for member in members:
        diff |= member.order ^ base
    bit = diff.bit_length() - 1
    zeros = [m for m in members if not (m.order >> bit) & 1]
    ones = [m for m in members if (m.order >> bit) & 1]
    return bit, zeros, ones


class ConflictSet:
    """Snowball tree over the members' id bits, as in avalanchego's tree.go.

    ``strength`` maps a trie node, named by ``(bit, order >> bit)`` of any
    member below it, to the number of polls in which that side reached
    ``alpha_preference``. Names stay valid when members join or leave. A
    newcomer's own sides start at 0 and ties keep the current side, so adding
    a member never moves the preference.
    """

    __slots__ = ("members", "pref", "strength")

    def __init__(self, first: _Member) -> None:
        self.members: list = [first]
        self.pref = first
        self.strength: dict[tuple[int, int], int] = {}

    def record_counts(self, counts: Mapping, alpha: int) -> bool:
        """Add one strength to every side whose members' votes reach `alpha`.

        Returns True if any side reached `alpha`.
        """
        reached = False
        strength = self.strength
        stack = [self.members]
        while stack:
            members = stack.pop()
            if len(members) < 2:
                continue
            bit, zeros, ones = _split(members)
            for side in (zeros, ones):
                if sum(counts.get(m, 0) for m in side) >= alpha:
                    name = (bit, side[0].order >> bit)
                    strength[name] = strength.get(name, 0) + 1
                    reached = True
                stack.append(side)
        return reached

    def choose(self) -> bool:
        """Walk the trie to the preferred member; return True if it changed."""
        strength = self.strength
        members = self.members
        current = self.pref
        while len(members) > 1:
            bit, zeros, ones = _split(members)
            s0 = strength.get((bit, zeros[0].order >> bit), 0)
            s1 = strength.get((bit, ones[0].order >> bit), 0)
            if s0 != s1:
                members = zeros if s0 > s1 else ones
            else:
                members = ones if current in ones else zeros
        changed = members[0] is not current
        self.pref = members[0]
        return changed


def add_weighted(planes: list[int], mask: int, weight: int) -> None:
    """Add `weight` to the bit-sliced count of every vertex in `mask`.

    The caller sizes `planes` so that no count overflows (k.bit_length()).
    """
    for j in range(len(planes)):
        if not (weight >> j) & 1:
            continue
        carry = mask
        i = j
        while carry and i < len(planes):
            overflow = planes[i] & carry
            planes[i] ^= carry
            carry = overflow
            i += 1


def at_least(planes: list[int], threshold: int, universe: int) -> int:
    """Return the mask of vertices in `universe` whose count >= `threshold`."""
    greater = 0
    equal = universe
    for i in reversed(range(len(planes))):
        plane = planes[i]
        if (threshold >> i) & 1:
            equal &= plane
        else:
            greater |= equal & plane
            equal &= ~plane
    return greater | equal


def iter_bits(mask: int) -> Iterator[int]:
    """Yield the positions of the set bits of `mask`, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low
