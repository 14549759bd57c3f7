"""Structured logs: one JSON object per line, with the current request's id and trace id.

    {"ts": "2026-11-24T22:30:01.123Z", "level": "INFO", "logger": "materials.requests",
     "message": "request", "requestId": "...", "traceId": "...", ...fields}

`extra={"fields": {...}}` on a log call adds its keys to the object (the request line of
middleware.observability does); an exception adds "exception" with the traceback.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from middleware.observability import current_observation


def skip_unused_record_fields() -> None:
    """Records need no caller, thread or process fields: neither format prints them, and
    finding the caller walks the stack on every record (with the thread and process look-ups
    it was about half the cost of the request line each request logs)."""
    logging._srcfile = None  # type: ignore[attr-defined]  # the logging HOWTO's "Optimization"
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class JsonLogFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        skip_unused_record_fields()  # made by dictConfig in each worker process


    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        observation = current_observation()
        if observation is not None:
            entry["requestId"] = observation.request_id
            if observation.trace_id:
                entry["traceId"] = observation.trace_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextLogFormatter(logging.Formatter):
    """`asctime level logger: message` lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        skip_unused_record_fields()


def logging_config(fmt: str = "json", level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the server (uvicorn applies it in every worker process):
    everything, uvicorn's own records included, to stderr as JSON lines or as plain text."""
    formatter: dict[str, Any] = ({"()": f"{__name__}.JsonLogFormatter"} if fmt == "json" else
                                 {"()": f"{__name__}.TextLogFormatter",
                                  "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s"})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")},
    }
