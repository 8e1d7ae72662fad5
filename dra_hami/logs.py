"""Process-wide logging: plain text for people, JSON lines for log pipelines."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

# Libraries whose DEBUG output drowns ours (celpy logs every CEL evaluation step, urllib3 every request).
THIRD_PARTY = ("celpy", "lark", "urllib3", "kubernetes")
THIRD_PARTY_ENV = "DRA_HAMI_THIRD_PARTY_LOG_LEVEL"
LEVELS = ("debug", "info", "warning", "error")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(level: str = "info", fmt: str = "text", third_party: str | None = None) -> None:
    """Log to stderr at ``level``; the loggers of THIRD_PARTY at ``third_party`` (default: the environment
    variable DRA_HAMI_THIRD_PARTY_LOG_LEVEL, else warning), never below ``level``."""
    chosen = third_party or os.environ.get(THIRD_PARTY_ENV) or "warning"
    if chosen.lower() not in LEVELS:
        source = "third_party" if third_party else THIRD_PARTY_ENV
        raise ValueError(f"{source}={chosen!r} is not a log level: use one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Records of a named logger reach the root handler without passing the root's level: cap them too.
    library_level = max(root.level, logging.getLevelName(chosen.upper()))
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(library_level)
