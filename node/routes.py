"""Control API endpoints of the daemon itself.

Endpoints (JSON; every one needs the bearer token)::

    GET  /status                 node.status()
    GET  /peers                  [{"peer_id", "addrs", "voter", "rejections"}]
    POST /publish                {"topic", "message", "timeout"} -> {"vertex_id", "status"}
    GET  /dag/tail?n=N           the N most recent vertices, newest first
    GET  /dag/vertex/{id}        one vertex with its decoded payload and status
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from node.api import ApiError, ApiRequest
from node.peering import _peer_addrs

if TYPE_CHECKING:
    from node.runtime import Node

MESSAGE_PAYLOAD_TYPE: Final = "message"
MAX_TAIL: Final = 1000
MAX_MESSAGE_BYTES: Final = 16 * 1024
MAX_PUBLISH_WAIT_S: Final = 300.0
_TOPIC_RE: Final = re.compile(r"^[A-Za-z0-9._/-]{1,64}$")


def install(node: Node) -> None:
    """Add the daemon's own endpoints to ``node.api``."""

    async def status(request: ApiRequest) -> Any:
        return node.status()

    async def peers(request: ApiRequest) -> Any:
        return [
            {
                "peer_id": peer,
                "addrs": _peer_addrs(node, peer),
                "voter": peer in node.dag.voters(),
                "rejections": {
                    str(reason): count
                    for reason, count in node.dag.admission.rejection_counts(
                        peer
                    ).items()
                },
            }
            for peer in node.p2p.connected_peers()
        ]

    async def publish(request: ApiRequest) -> Any:
        topic, message, timeout = _publish_args(request.body)
        vertex_id = await node.issue_vertex(
            MESSAGE_PAYLOAD_TYPE, {"topic": topic, "text": message}
        )
        status = node.vertex_status(vertex_id)
        if timeout > 0:
            status = await node.wait_decided(vertex_id, timeout)
        return {"vertex_id": vertex_id.hex(), "status": status}

    async def dag_tail(request: ApiRequest) -> Any:
        raw = request.query.get("n", "20")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_TAIL:
            raise ApiError(400, f"n={raw!r} must be an integer from 1 to {MAX_TAIL}")
        return [node.dag.describe(v, full=False) for v in node.dag.tail(int(raw))]

    async def dag_show(request: ApiRequest) -> Any:
        vertex_id = _parse_id(request.params["id"])
        vertex = node.dag.get(vertex_id)
        if vertex is None:
            raise ApiError(404, f"vertex {vertex_id.hex()} not found")
        return node.dag.describe(vertex, full=True)

    node.api.add_route("GET", "/status", status)
    node.api.add_route("GET", "/peers", peers)
    node.api.add_route("POST", "/publish", publish)
    node.api.add_route("GET", "/dag/tail", dag_tail)
    node.api.add_route("GET", "/dag/vertex/{id}", dag_show)


def _publish_args(body: Any) -> tuple[str, str, float]:
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object with topic and message")
    topic = body.get("topic")
    message = body.get("message")
    timeout = body.get("timeout", 10.0)
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
        raise ApiError(
            400, f"topic={topic!r} must be 1 to 64 characters of A-Z, a-z, 0-9, . _ / -"
        )
    if not isinstance(message, str):
        raise ApiError(400, "message must be a string")
    try:
        size = len(message.encode("utf-8"))
    except UnicodeEncodeError:
        # JSON can carry lone surrogates (\udce9), which no UTF-8 text holds.
        raise ApiError(400, "message is not valid Unicode text") from None
    if size > MAX_MESSAGE_BYTES:
        raise ApiError(
            400, f"message must be a string of at most {MAX_MESSAGE_BYTES} bytes"
        )
    if (
        not isinstance(timeout, (int, float))
        or isinstance(timeout, bool)
        or not 0 <= timeout <= MAX_PUBLISH_WAIT_S
    ):
        raise ApiError(
            400, f"timeout={timeout!r} must be from 0 to {MAX_PUBLISH_WAIT_S}"
        )
    return topic, message, float(timeout)


def _parse_id(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ApiError(400, f"vertex id {text!r} must be 64 hexadecimal digits")
    return raw
