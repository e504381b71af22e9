"""Logging set-up shared by every command."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Final, TextIO

LOG_FORMATS: Final[tuple[str, ...]] = ("text", "json")

# py-libp2p's Kademlia handler logs a WARNING, often with an empty error text,
# when an inbound stream ends in a reset rather than a clean close. Our p2p
# layer logs the failures that matter, with the peer id.
_QUIET_LIBP2P_LOGGERS: Final[tuple[str, ...]] = ("libp2p.kad_dht",)


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    A handler bound to the stream object of the moment keeps writing to it
    after the stream is swapped out and closed (pytest's capture does both),
    and every record then ends in "I/O operation on closed file".
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        # StreamHandler.setStream assigns here; the stream is always resolved
        # at emit time instead.
        pass


def configure_logging(level: str, log_format: str) -> None:
    """Send log records at `level` and above to stderr in `log_format`."""
    handler = StderrHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # py-libp2p logs every failed dial and stream reset at INFO or WARNING;
    # our own p2p layer logs those events once, with the peer id.
    logging.getLogger("libp2p").setLevel(
        max(logging.getLevelName(level), logging.WARNING)
    )
    for name in _QUIET_LIBP2P_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "libp2p" in sys.modules:
        route_libp2p_logging()


def route_libp2p_logging() -> None:
    """Send py-libp2p's records through the root handler, in our format.

    Importing py-libp2p (without ``LIBP2P_DEBUG``) detaches its ``libp2p``
    logger from the root, so its warnings reach Python's last-resort handler
    and print as bare lines with no time, level or logger name. Call this
    after py-libp2p is imported; with ``LIBP2P_DEBUG`` set, py-libp2p's own
    handlers are left alone.
    """
    import libp2p  # noqa: F401  (its import is what detaches the logger)

    if os.environ.get("LIBP2P_DEBUG"):
        return
    libp2p_logger = logging.getLogger("libp2p")
    libp2p_logger.propagate = True
    libp2p_logger.setLevel(max(logging.getLogger().level, logging.WARNING))
    for name in _QUIET_LIBP2P_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
