import io
import logging
import sys

import pytest

from node.logs import configure_logging, route_libp2p_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    libp2p_logger = logging.getLogger("libp2p")
    kad = logging.getLogger("libp2p.kad_dht")
    saved = (
        root.handlers[:],
        root.level,
        libp2p_logger.level,
        libp2p_logger.propagate,
        kad.level,
    )
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    libp2p_logger.setLevel(saved[2])
    libp2p_logger.propagate = saved[3]
    kad.setLevel(saved[4])


def test_records_go_to_current_stderr_after_old_one_is_closed(
    restore_logging, monkeypatch
):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO", "text")
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    first.close()

    logging.getLogger("node.test").warning("peer rejected peer_id=%s", "abc")

    text = second.getvalue()
    assert "WARNING node.test: peer rejected peer_id=abc" in text
    assert "Logging error" not in text


def test_libp2p_warnings_use_our_format_and_kad_dht_noise_is_dropped(
    restore_logging, monkeypatch
):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO", "json")
    route_libp2p_logging()

    logging.getLogger("libp2p.kad_dht.kad_dht").warning(
        "Failed to read DHT message from stream: %s", ""
    )
    logging.getLogger("libp2p.network.swarm").warning("dial failed peer=%s", "x")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert '"logger": "libp2p.network.swarm"' in lines[0]
    assert '"level": "WARNING"' in lines[0]
