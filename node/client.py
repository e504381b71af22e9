"""Client side of the control API, used by the commands that talk to a daemon.

A running daemon writes ``runtime.json`` into its data directory (peer id,
listen addresses, API and metrics addresses, process id) and removes it when
it stops. The client reads that file to find the API and ``api.token`` to
authenticate.

Public API::

    client = ApiClient.from_data_dir(data_dir, timeout=30.0)
    client.get("/status") -> object
    client.post("/publish", {"topic": "...", "message": "..."}) -> object
    read_runtime(data_dir) -> dict
    DaemonNotRunning(NodeError), ApiAuthError(NodeError), ApiCallError(NodeError)
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from node import NodeError
from node.api import TOKEN_FILE, read_token

RUNTIME_FILE: Final = "runtime.json"


class DaemonNotRunning(NodeError):
    """No daemon is running for the data directory, or it does not respond."""


class ApiAuthError(NodeError):
    """The daemon rejected the API token."""


class ApiCallError(NodeError):
    """The daemon returned an error status for an API call."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_runtime(data_dir: Path) -> dict[str, Any]:
    """Return the contents of ``runtime.json`` written by the running daemon.

    Raises:
        DaemonNotRunning: the data directory or the file does not exist, or
            the file is not valid JSON.
    """
    if data_dir.exists() and not data_dir.is_dir():
        raise DaemonNotRunning(
            f"data directory {data_dir} is a file, not a directory; "
            "pass --data-dir with the directory `synaptic-mesh init` created"
        )
    if not data_dir.is_dir():
        raise DaemonNotRunning(
            f"data directory {data_dir} does not exist; "
            f"create it with `synaptic-mesh init --data-dir {data_dir}`"
        )
    path = data_dir / RUNTIME_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DaemonNotRunning(
            f"no daemon is running for data directory {data_dir} "
            f"({RUNTIME_FILE} not found); "
            f"start one with `synaptic-mesh start --data-dir {data_dir}`"
        ) from None
    except (ValueError, OSError) as error:
        raise DaemonNotRunning(f"cannot read {path}: {error}") from None


class ApiClient:
    """Blocking JSON-over-HTTP client for one daemon's control API."""

    def __init__(self, host: str, port: int, token: str, *, timeout: float) -> None:
        self.host = host
        self.port = port
        self._token = token
        self._timeout = timeout
        self.data_dir: Path | None = None

    @classmethod
    def from_data_dir(cls, data_dir: Path, *, timeout: float = 30.0) -> ApiClient:
        """Build a client from the daemon's ``runtime.json`` and ``api.token``.

        Raises:
            DaemonNotRunning: no daemon has written its runtime file.
            ApiAuthError: the token file is missing or unreadable.
        """
        runtime = read_runtime(data_dir)
        host, _, port = str(runtime.get("api", "")).rpartition(":")
        if not host or not port.isdigit():
            raise DaemonNotRunning(
                f"{data_dir / RUNTIME_FILE} has no valid api address: "
                f"{runtime.get('api')!r}"
            )
        token_path = data_dir / TOKEN_FILE
        try:
            token = read_token(token_path)
        except OSError as error:
            raise ApiAuthError(
                f"cannot read the API token {token_path}: {error}"
            ) from None
        client = cls(host.strip("[]"), int(port), token, timeout=timeout)
        client.data_dir = data_dir
        return client

    def get(self, path: str, **query: object) -> Any:
        """Send a GET request and return the decoded JSON body."""
        if query:
            path += "?" + "&".join(
                f"{quote(key)}={quote(str(value))}" for key, value in query.items()
            )
        return self._call("GET", path, None)

    def post(self, path: str, body: Any = None) -> Any:
        """Send a POST request with a JSON body and return the decoded JSON body."""
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: Any) -> Any:
        connection = http.client.HTTPConnection(
            self.host, self.port, timeout=self._timeout
        )
        headers = {"Authorization": f"Bearer {self._token}"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (ConnectionRefusedError, ConnectionResetError) as error:
            where = f" (data directory {self.data_dir})" if self.data_dir else ""
            raise DaemonNotRunning(
                f"no daemon responds at {self.host}:{self.port}{where}: {error.strerror}; "
                "it has stopped, start it again with `synaptic-mesh start`"
            ) from None
        except TimeoutError:
            raise ApiCallError(
                0,
                f"the daemon at {self.host}:{self.port} did not answer {method} {path} "
                f"within {self._timeout:g} s",
            ) from None
        except OSError as error:
            raise DaemonNotRunning(
                f"cannot reach the daemon at {self.host}:{self.port}: {error}"
            ) from None
        finally:
            connection.close()

        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        if response.status == 401:
            raise ApiAuthError(
                f"the daemon at {self.host}:{self.port} rejected the API token; "
                "use the api.token file of the same data directory the daemon was "
                "started with"
            )
        if response.status >= 400:
            message = decoded.get("error") if isinstance(decoded, dict) else None
            raise ApiCallError(
                response.status,
                message or f"{method} {path} failed: HTTP {response.status}",
            )
        return decoded
