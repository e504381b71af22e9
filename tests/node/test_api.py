import logging
import stat

import pytest
import trio

from node.api import (
    ApiError,
    ControlApi,
    MetricsApp,
    create_token,
    read_token,
    serve_http,
)
from node.client import ApiAuthError, ApiCallError, ApiClient, DaemonNotRunning
from node.metrics import NodeMetrics

TOKEN = "secret-token"


async def _call(client, method, path, body=None):
    if method == "GET":
        return await trio.to_thread.run_sync(client.get, path)
    return await trio.to_thread.run_sync(client.post, path, body)


def _build_api():
    api = ControlApi(TOKEN)

    async def echo(request):
        return {"params": request.params, "query": request.query, "body": request.body}

    async def teapot(request):
        raise ApiError(418, "no coffee here")

    async def broken(request):
        raise RuntimeError("bug in handler")

    api.add_route("GET", "/items/{name}", echo)
    api.add_route("POST", "/items/{name}", echo)
    api.add_route("GET", "/teapot", teapot)
    api.add_route("GET", "/broken", broken)
    return api


@pytest.fixture
async def served(nursery):
    shutdown = trio.Event()
    address = await nursery.start(
        serve_http, _build_api(), "127.0.0.1:0", "api", shutdown
    )
    host, _, port = address.rpartition(":")
    yield host, int(port)
    shutdown.set()


async def test_route_params_query_and_body(served):
    client = ApiClient(*served, TOKEN, timeout=5)
    got = await _call(client, "GET", "/items/alpha?n=3")
    assert got == {"params": {"name": "alpha"}, "query": {"n": "3"}, "body": None}
    got = await _call(client, "POST", "/items/beta", {"x": [1, 2]})
    assert got["body"] == {"x": [1, 2]}


async def test_wrong_token_rejected(served):
    client = ApiClient(*served, "not-the-token", timeout=5)
    with pytest.raises(ApiAuthError, match="rejected the API token"):
        await _call(client, "GET", "/items/a")


async def test_unknown_path_and_method(served):
    client = ApiClient(*served, TOKEN, timeout=5)
    with pytest.raises(ApiCallError) as caught:
        await _call(client, "GET", "/nothing")
    assert caught.value.status == 404
    with pytest.raises(ApiCallError) as caught:
        await _call(client, "POST", "/teapot", {})
    assert caught.value.status == 405


async def test_handler_errors_become_statuses(served, caplog):
    client = ApiClient(*served, TOKEN, timeout=5)
    with pytest.raises(ApiCallError, match="no coffee here") as caught:
        await _call(client, "GET", "/teapot")
    assert caught.value.status == 418
    with caplog.at_level(logging.ERROR, logger="node.api"):
        with pytest.raises(ApiCallError) as caught:
            await _call(client, "GET", "/broken")
    assert caught.value.status == 500
    assert "bug in handler" in caplog.text
    # The server keeps serving after a handler bug.
    assert (await _call(client, "GET", "/items/ok"))["params"] == {"name": "ok"}


async def test_invalid_json_body_rejected(served):
    import http.client

    host, port = served

    def post_raw():
        connection = http.client.HTTPConnection(host, port, timeout=5)
        connection.request(
            "POST",
            "/items/x",
            body=b"{not json",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        response = connection.getresponse()
        return response.status, response.read()

    status, body = await trio.to_thread.run_sync(post_raw)
    assert status == 400
    assert b"not valid JSON" in body


def test_duplicate_route_rejected():
    api = ControlApi(TOKEN)

    async def handler(request):
        return None

    api.add_route("GET", "/a", handler)
    with pytest.raises(ValueError, match="already registered"):
        api.add_route("GET", "/a", handler)


async def test_metrics_app_serves_registry(nursery):
    import http.client

    metrics = NodeMetrics()
    metrics.vertices.labels(event="accepted").inc(3)
    shutdown = trio.Event()
    address = await nursery.start(
        serve_http, MetricsApp(metrics.registry), "127.0.0.1:0", "metrics", shutdown
    )
    host, _, port = address.rpartition(":")

    def scrape():
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        connection.request("GET", "/metrics")
        return connection.getresponse().read().decode()

    text = await trio.to_thread.run_sync(scrape)
    assert 'synaptic_mesh_vertices_total{event="accepted"} 3.0' in text
    assert "synaptic_mesh_finality_seconds_bucket" in text
    shutdown.set()


async def test_address_in_use_is_a_clear_error(served, nursery):
    from node import NodeError

    host, port = served
    with pytest.raises(NodeError, match=f"cannot listen on api address {host}:{port}"):
        await nursery.start(
            serve_http, _build_api(), f"{host}:{port}", "api", trio.Event()
        )


def test_token_file_is_private(tmp_path):
    path = tmp_path / "api.token"
    token = create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token(path) == token
    assert len(token) >= 40


def test_client_without_daemon(tmp_path):
    with pytest.raises(DaemonNotRunning, match="does not exist"):
        ApiClient.from_data_dir(tmp_path / "absent")
    with pytest.raises(DaemonNotRunning, match="no daemon is running"):
        ApiClient.from_data_dir(tmp_path)
