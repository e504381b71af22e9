"""Run ``synaptic-mesh`` daemons as real OS processes for integration tests.

Every wait polls a condition with a deadline; nothing sleeps for a fixed time
as a means of synchronisation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
POLL_INTERVAL_S = 0.05


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return an environment without the user's SYNAPTIC_MESH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPTIC_MESH_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run one ``synaptic-mesh`` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = POLL_INTERVAL_S,
) -> Any:
    """Poll `condition` until it returns a truthy value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Daemon:
    """One daemon process with its own data directory."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env or {}
        self.process: subprocess.Popen[str] | None = None
        self.stdout_path = data_dir.parent / f"{data_dir.name}.stdout"
        self.stderr_path = data_dir.parent / f"{data_dir.name}.stderr"

    def init(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.cli("init", *args)
        assert result.returncode == 0, result.stderr
        return result

    def cli(
        self, *args: str, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        command, *rest = args
        if command == "dag":
            return run_cli(
                "dag",
                rest[0],
                "--data-dir",
                str(self.data_dir),
                *rest[1:],
                env=self.env,
                timeout=timeout,
            )
        return run_cli(
            command,
            "--data-dir",
            str(self.data_dir),
            *rest,
            env=self.env,
            timeout=timeout,
        )

    def start(self, *args: str) -> None:
        """Start the daemon in the background; see `wait_ready`."""
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "node.cli",
                    "start",
                    "--data-dir",
                    str(self.data_dir),
                    *args,
                ],
                stdout=out,
                stderr=err,
                text=True,
                env=cli_env(self.env),
                cwd=REPO,
            )

    def runtime(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.data_dir / "runtime.json").read_text())
        except (OSError, ValueError):
            return None

    # Generous but bounded, because a start that takes about a second on an
    # idle machine can take far longer on a loaded 2-core CI runner.
    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until the daemon has written runtime.json; return its contents."""

        def ready():
            self.check_alive()
            info = self.runtime()
            return info if info and info.get("pid") == self.process.pid else None

        return wait_for(ready, timeout, f"daemon {self.data_dir.name} to start")

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"daemon {self.data_dir.name} exited with {self.process.returncode}:\n"
                + self.stderr()
            )

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def stdout(self) -> str:
        return self.stdout_path.read_text() if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def stop(
        self, sig: int = signal.SIGTERM, timeout: float = 15.0
    ) -> tuple[int, float]:
        """Send `sig` and wait for the exit; return the exit code and the seconds taken."""
        assert self.process is not None
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start_daemons(
    tmp_path: Path, count: int, *, env: dict[str, str] | None = None
) -> list[Daemon]:
    """Initialise and start `count` daemons, each bootstrapping from the first."""
    daemons = []
    bootstrap: Sequence[str] = ()
    for index in range(count):
        daemon = Daemon(tmp_path / f"node{index}", env=env)
        daemon.init()
        daemon.start(*[arg for addr in bootstrap for arg in ("--bootstrap", addr)])
        info = daemon.wait_ready()
        if index == 0:
            bootstrap = (info["listen_addrs"][0],)
        daemons.append(daemon)
    return daemons
