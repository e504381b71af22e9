"""Logging set-up shared by every command."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Final

LOG_FORMATS: Final[tuple[str, ...]] = ("text", "json")


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)
            )
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: str) -> None:
    """Send log records at `level` and above to stderr in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
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
    logging.getLogger("libp2p").setLevel(max(logging.getLevelName(level), logging.WARNING))
