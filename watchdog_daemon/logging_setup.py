"""structlog set up once for the host side: JSON lines, tracebacks as data without locals.

Locals are where keys live (`key = read_key(...)`), and structlog's default dict tracebacks include
them (structlog's `ExceptionDictTransformer`, `show_locals` defaults to True): `show_locals=False`
is the point of this module. A last processor also replaces any bytes value by its length, so a key
passed as a log field by mistake never reaches the output.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.processors import ExceptionDictTransformer, ExceptionRenderer

from watchdog_daemon.keys.secret import SecretBytes

# Tracebacks as dicts, never with local variables.
exception_renderer = ExceptionRenderer(ExceptionDictTransformer(show_locals=False))


def _redact_bytes(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Raw bytes are never logged (a key, or part of one): only their length."""
    for name, value in list(event.items()):
        if isinstance(value, (bytes, bytearray, memoryview)):  # a tuple: hosts run 3.9
            event[name] = f"<{len(value)} bytes>"
        elif isinstance(value, SecretBytes):
            event[name] = repr(value)
    return event


# logging.getLevelNamesMapping() is 3.11+; hosts run Python 3.9 and later.
_LEVELS = {"CRITICAL": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
           "INFO": logging.INFO, "DEBUG": logging.DEBUG}


def processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_bytes,
        exception_renderer,
        structlog.processors.JSONRenderer(),
    ]


def configure_logging(*, level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """JSON lines on `stream` (stderr by default) at `level` and above."""
    if isinstance(level, str):
        level = _LEVELS[level.upper()]
    structlog.configure(
        processors=processors(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()


__all__ = ["configure_logging", "exception_renderer", "get_logger", "processors"]
