"""Logging: one line per event worth knowing, as text or JSON."""

from __future__ import annotations

import logging
import sys

import orjson

# librdkafka's own log lines (one per reconnect attempt, say) go to this logger; they are shown
# with --log-level DEBUG only: the pipeline reports what matters as its own events.
LIBRDKAFKA_LOGGER = "eos_pipeline.librdkafka"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet = level.upper() != "DEBUG"
    logging.getLogger(LIBRDKAFKA_LOGGER).setLevel(logging.CRITICAL if quiet else logging.DEBUG)
