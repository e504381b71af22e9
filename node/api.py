"""Local control API: HTTP and JSON on a loopback address, served by hypercorn on trio.

The CLI talks to a running daemon through this API. Every request except
Prometheus scrapes carries ``Authorization: Bearer <token>``, where the token is
the content of ``api.token`` (mode 0600) in the data directory, so only a user
who can read the data directory can drive the node.

Public API::

    api = ControlApi(token)
    api.add_route("GET", "/models/{name}", handler)   # async handler(ApiRequest)
    await nursery.start(serve_http, api, "127.0.0.1:0", "api", shutdown_event)
    raise ApiError(404, "model not found name=x")      # inside a handler
    MetricsApp(registry)                               # ASGI app for /metrics

A handler returns any JSON-serialisable value; it becomes the response body
with status 200. A handler raising :class:`ApiError` produces that status and
``{"error": message}``. Any other exception is logged with its traceback and
returned as a 500, so a bug in one endpoint never stops the daemon.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

import trio

from node import NodeError

log = logging.getLogger(__name__)

TOKEN_FILE: Final = "api.token"
MAX_BODY_BYTES: Final = 1 << 20


class ApiError(NodeError):
    """An API call failed with an HTTP status and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One decoded API request, as a route handler receives it."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None


Handler = Callable[[ApiRequest], Awaitable[Any]]


def create_token(path: Path) -> str:
    """Write a new random token to `path` with mode 0600 and return it."""
    token = secrets.token_urlsafe(32)
    _write_private(path, token + "\n")
    return token


def read_token(path: Path, *, private: bool = False) -> str:
    """Return the token stored at `path`.

    Args:
        path: the token file.
        private: refuse a file that group or others can access, as the
            daemon does at start; the token grants full control of the node.

    Raises:
        NodeError: `private` is set and the file's mode is wider than 0600.
        OSError: the file cannot be read.
    """
    if private:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise NodeError(
                f"API token file {path} has mode {mode:04o} and is readable by "
                f"other users; run `chmod 600 {path}` if the token was not "
                "exposed, otherwise also write a new random token into it"
            )
    return path.read_text(encoding="ascii").strip()


def _write_private(path: Path, text: str) -> None:
    # Created with mode 0600 from the start, so the secret is never readable
    # by others, not even between create and chmod. The chmod covers a file
    # that already existed with a wider mode.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


class ControlApi:
    """A small ASGI application that routes JSON requests to handlers.

    Routes are ``(method, pattern)`` pairs where a pattern segment written as
    ``{name}`` matches any one path segment and is passed in
    ``ApiRequest.params``.
    """

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._routes: list[tuple[str, tuple[str, ...], Handler]] = []

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Register `handler` for `method` requests on `path`.

        Raises:
            ValueError: the same method and path are already registered.
        """
        pattern = tuple(path.strip("/").split("/"))
        for known_method, known_pattern, _ in self._routes:
            if known_method == method.upper() and known_pattern == pattern:
                raise ValueError(f"route already registered: {method} {path}")
        self._routes.append((method.upper(), pattern, handler))

    def routes(self) -> list[str]:
        """Return the registered routes as ``"METHOD /path"`` strings."""
        return [f"{m} /{'/'.join(p)}" for m, p, _ in self._routes]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status, payload = await self._respond(scope, receive)
        await _send_json(send, status, payload)

    async def _respond(self, scope, receive) -> tuple[int, Any]:
        method = scope["method"]
        path = scope["path"]
        if not self._authorized(scope):
            return 401, {"error": "missing or wrong API token"}

        segments = tuple(unquote(part) for part in path.strip("/").split("/"))
        match = self._match(method, segments)
        if match is None:
            return 404, {"error": f"no such endpoint: {method} {path}"}
        if isinstance(match, str):
            return 405, {"error": match}
        handler, params = match

        try:
            body = await _read_body(receive)
        except ApiError as error:
            return error.status, {"error": error.message}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        request = ApiRequest(method, path, params, query, body)
        try:
            return 200, await handler(request)
        except ApiError as error:
            return error.status, {"error": error.message}
        except Exception:
            log.exception("api handler failed method=%s path=%s", method, path)
            return 500, {"error": "internal error; see the daemon log"}

    def _authorized(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    return hmac.compare_digest(token.strip(), self._token)
        return False

    def _match(self, method: str, segments: tuple[str, ...]):
        allowed = []
        for route_method, pattern, handler in self._routes:
            params = _match_pattern(pattern, segments)
            if params is None:
                continue
            if route_method == method:
                return handler, params
            allowed.append(route_method)
        if allowed:
            return f"method {method} not allowed; use {', '.join(sorted(allowed))}"
        return None


def _match_pattern(pattern, segments) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params = {}
    for want, got in zip(pattern, segments):
        if want.startswith("{") and want.endswith("}"):
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


class MetricsApp:
    """An ASGI application serving a Prometheus registry on ``GET /metrics``."""

    def __init__(self, registry) -> None:
        self._registry = registry

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics" or scope["method"] != "GET":
            await _send_json(send, 404, {"error": "only GET /metrics is served here"})
            return
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self._registry)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive) -> Any:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"request body is not valid JSON: {error}") from None


async def _send_json(send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _run_lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve_http(
    app,
    listen: str,
    name: str,
    shutdown: trio.Event,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `listen` (``HOST:PORT``) until `shutdown` is set.

    ``task_status.started`` receives the bound ``HOST:PORT``, which differs
    from `listen` when the port is 0.

    Raises:
        NodeError: the address cannot be bound (for example, already in use).
    """
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve

    config = HypercornConfig()
    config.bind = [listen]
    config.accesslog = None
    # hypercorn announces each bind at INFO; serve_http logs the bound address
    # itself, so only hypercorn's warnings and errors are kept.
    errorlog = logging.getLogger(f"node.api.{name}.hypercorn")
    errorlog.setLevel(logging.WARNING)
    config.errorlog = errorlog
    config.graceful_timeout = 1.0
    # Without this hypercorn adds a Server header and date per response; the
    # API is for our own CLI, which needs neither.
    config.include_server_header = False

    class _Started:
        # hypercorn reports "http://HOST:PORT" strings; callers want HOST:PORT.
        def started(self, binds: list[str]) -> None:
            address = binds[0].split("://", 1)[1]
            log.info("%s listening address=%s", name, address)
            task_status.started(address)

    try:
        await serve(app, config, shutdown_trigger=shutdown.wait, task_status=_Started())
    except* OSError as group:
        error = _first_leaf(group)
        raise NodeError(f"cannot listen on {name} address {listen}: {error}") from None


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
