"""Supervised long-running services of a node.

A service is an async function that runs until the node stops. If it raises,
the supervisor logs the error with its traceback and starts it again after a
delay that doubles per consecutive crash (capped), so one broken service never
stops the daemon and never spins the CPU. A service that returns is done and
is not restarted. ``trio.Cancelled`` always propagates.

Public API::

    services = Services(nursery, restart_delay=1.0)
    services.start(name, async_fn, *args)
    services.snapshot() -> list[dict]   # name, state, restarts, last_error
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import trio

log = logging.getLogger(__name__)

MAX_RESTART_DELAY_S: Final = 30.0
# A service that ran this long before crashing counts as healthy again, so
# its next restart starts from the base delay.
HEALTHY_RUN_S: Final = 60.0


@dataclass(slots=True)
class _ServiceState:
    name: str
    state: str = "starting"
    restarts: int = 0
    last_error: str = ""


class Services:
    """Starts and supervises named services in one nursery."""

    def __init__(self, nursery: trio.Nursery, *, restart_delay: float) -> None:
        self._nursery = nursery
        self._restart_delay = restart_delay
        self._states: dict[str, _ServiceState] = {}

    def start(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as service `name`, restarting it when it raises.

        Raises:
            ValueError: a service of that name already exists.
        """
        if name in self._states:
            raise ValueError(f"service {name!r} is already running")
        self._states[name] = _ServiceState(name)
        self._nursery.start_soon(
            self._supervise, name, fn, args, name=f"service:{name}"
        )

    def snapshot(self) -> list[dict[str, Any]]:
        """Return the state of every service, for ``status``."""
        return [
            {
                "name": s.name,
                "state": s.state,
                "restarts": s.restarts,
                "last_error": s.last_error,
            }
            for s in self._states.values()
        ]

    async def _supervise(self, name: str, fn, args) -> None:
        state = self._states[name]
        delay = self._restart_delay
        while True:
            state.state = "running"
            started = trio.current_time()
            try:
                await fn(*args)
            except trio.Cancelled:
                state.state = "stopped"
                raise
            except Exception as error:
                state.restarts += 1
                state.last_error = f"{type(error).__name__}: {error}"
                state.state = "restarting"
                if trio.current_time() - started >= HEALTHY_RUN_S:
                    delay = self._restart_delay
                log.exception(
                    "service crashed name=%s restarts=%d retry_in_s=%.1f",
                    name,
                    state.restarts,
                    delay,
                )
                await trio.sleep(delay)
                delay = min(MAX_RESTART_DELAY_S, max(delay * 2, 0.1))
                log.info("service restarting name=%s", name)
                continue
            state.state = "stopped"
            log.info("service finished name=%s", name)
            return
