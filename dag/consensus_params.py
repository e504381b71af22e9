"""Parameters of the Avalanche engine, with avalanchego's names and defaults.

The snowball fields (``k``, ``alpha_preference``, ``alpha_confidence``, ``beta``,
``concurrent_repolls``) keep the names, defaults and validity conditions of
avalanchego's ``snow/consensus/snowball/parameters.go``:

    k/2 < alpha_preference <= alpha_confidence <= k
    0 < concurrent_repolls <= beta

The remaining fields bound what the engine keeps in memory and how it behaves
when polls cannot reach a quorum. Avalanchego has no direct counterpart for
them, so each default names its source.

Public API:
    AvalancheParams(k=20, alpha_preference=15, alpha_confidence=15, beta=20,
        concurrent_repolls=4, max_parents=16, max_processing=4096,
        poll_timeout=2.0, repoll_backoff_min=0.1, repoll_backoff_max=10.0,
        max_poll_batch=64)
    AvalancheParams.validate() -> None   (raises InvalidParams)
    AvalancheParams.for_network(nodes, beta=20) -> AvalancheParams
    InvalidParams(DagError, ValueError)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dag import DagError


class InvalidParams(DagError, ValueError):
    """Consensus parameters that break a validity condition."""


@dataclass(frozen=True, slots=True)
class AvalancheParams:
    """Tunables of `dag.consensus.Avalanche`.

    Attributes:
        k: Number of nodes sampled per poll (avalanchego default 20). The
            sample is drawn from the peers plus the node itself when the engine
            is given its own id, so k may be as large as the number of nodes.
        alpha_preference: Votes a vertex needs in one poll to gain preference
            strength (avalanchego default 15).
        alpha_confidence: Votes a vertex needs in one poll for the poll to
            count towards its confidence (avalanchego default 15).
        beta: Consecutive successful polls that finalize a vertex
            (avalanchego default 20).
        concurrent_repolls: Polls kept outstanding while anything is
            processing (avalanchego default 4).
        max_parents: Most parents `frontier()` offers for a new vertex. The
            vertex format allows more; 16 keeps a vertex under 1 KiB of parent
            ids (32 bytes each) while still merging a busy frontier.
        max_processing: Hard cap on undecided vertices. `add_vertex` raises
            `ProcessingFull` beyond it, so a flood of conflicting vertices costs
            bounded memory. 4096 is about 400 s of a 10 vertex/s network.
        poll_timeout: Seconds a poll waits for replies before missing replies
            count as no vote. 2 s is several round trips on a LAN or WAN mesh.
        repoll_backoff_min: First delay, in seconds, after a poll that
            reached no quorum.
        repoll_backoff_max: Largest delay, in seconds, between polls while
            quorum keeps failing (the delay doubles up to this value).
        max_poll_batch: Most vertex ids in one poll request. Replies may carry
            twice as many votes (the asked ids plus the responder's frontier).
    """

    k: int = 20
    alpha_preference: int = 15
    alpha_confidence: int = 15
    beta: int = 20
    concurrent_repolls: int = 4
    max_parents: int = 16
    max_processing: int = 4096
    poll_timeout: float = 2.0
    repoll_backoff_min: float = 0.1
    repoll_backoff_max: float = 10.0
    max_poll_batch: int = 64

    @property
    def max_votes(self) -> int:
        """Most vote ids a poll reply may carry."""
        return 2 * self.max_poll_batch

    def validate(self) -> None:
        """Check every condition and raise one error listing each violation.

        Raises:
            InvalidParams: if any condition fails. The message names each
                failed inequality with the values involved.
        """
        problems = []
        if self.k < 1:
            problems.append(f"k={self.k} must be at least 1")
        if self.alpha_preference <= self.k // 2:
            problems.append(
                f"alpha_preference={self.alpha_preference} must exceed "
                f"k/2={self.k // 2}"
            )
        if self.alpha_confidence < self.alpha_preference:
            problems.append(
                f"alpha_confidence={self.alpha_confidence} must be at least "
                f"alpha_preference={self.alpha_preference}"
            )
        if self.alpha_confidence > self.k:
            problems.append(
                f"alpha_confidence={self.alpha_confidence} must be at most k={self.k}"
            )
        if self.beta < 1:
            problems.append(f"beta={self.beta} must be at least 1")
        if self.concurrent_repolls < 1:
            problems.append(
                f"concurrent_repolls={self.concurrent_repolls} must be at least 1"
            )
        if self.concurrent_repolls > self.beta:
            problems.append(
                f"concurrent_repolls={self.concurrent_repolls} must be at most "
                f"beta={self.beta}"
            )
        problems.extend(self._limit_problems())
        if problems:
            raise InvalidParams("invalid consensus parameters: " + "; ".join(problems))

    def _limit_problems(self) -> list[str]:
        problems = []
        for name in ("max_parents", "max_processing", "max_poll_batch"):
            value = getattr(self, name)
            if value < 1:
                problems.append(f"{name}={value} must be at least 1")
        for name in ("poll_timeout", "repoll_backoff_min"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                problems.append(f"{name}={value} must be a positive number")
        if not self.repoll_backoff_max >= self.repoll_backoff_min:
            problems.append(
                f"repoll_backoff_max={self.repoll_backoff_max} must be at least "
                f"repoll_backoff_min={self.repoll_backoff_min}"
            )
        return problems

    @classmethod
    def for_network(cls, nodes: int, beta: int = 20) -> AvalancheParams:
        """Build parameters for a network of `nodes` nodes, self included.

        The sample size is min(20, nodes - 1). ``alpha_confidence`` is
        ceil(3k/4), avalanchego's 15 of 20, so a quarter of a sample may be
        silent. ``alpha_preference`` is k/2 + 1, avalanchego's dual-alpha
        setting. It breaks an even split between two conflicting vertices far
        sooner than 15 of 20 does, and with few nodes an even split is common.
        For 5 nodes this gives k=4 with both alphas 3. `concurrent_repolls`
        shrinks with beta to stay valid.

        Raises:
            InvalidParams: if `nodes` < 2 or the result is invalid.
        """
        if nodes < 2:
            raise InvalidParams(f"nodes={nodes} must be at least 2 to sample a peer")
        k = min(20, nodes - 1)
        params = cls(
            k=k,
            alpha_preference=k // 2 + 1,
            alpha_confidence=max(k // 2 + 1, math.ceil(3 * k / 4)),
            beta=beta,
            concurrent_repolls=min(4, beta),
        )
        params.validate()
        return params
