"""Log events of the watchdog, with two guards that keep the key out of every log line.

1. Exceptions are never logged with `exc_info`: a traceback renderer may print frame locals
   (structlog's dict_tracebacks does by default, FACTS) and the key is in some frame. We log the
   exception's type, its message and the innermost frame's file:line instead.
2. Every string field goes through a Redactor that knows the raw, hex and base64 forms of the
   keys this process has held, and replaces them with the fingerprint. Defence in depth against
   a library that puts its input into an exception message.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import traceback
from collections import deque
from typing import Any

import structlog

from watchdog_daemon.keys.secret import SecretBytes

LOGGER_NAME = "slurmrestd-access.watch"


class Redactor:
    def __init__(self, keep: int = 4) -> None:
        self._lock = threading.Lock()
        self._forms: deque[tuple[str, list[str]]] = deque(maxlen=keep)

    def add(self, secret: SecretBytes) -> None:
        with self._lock:
            if any(fp == secret.fingerprint for fp, _ in self._forms):
                return
            raw = secret.reveal()
            forms = {
                raw.hex(),
                raw.hex().upper(),
                base64.b64encode(raw).decode(),
                base64.b64encode(raw).decode().rstrip("="),
                base64.urlsafe_b64encode(raw).decode().rstrip("="),
                repr(raw)[2:-1],  # the b'...' form an f-string of bytes gives
                raw.decode("latin-1"),
            }
            # Longest first, so a form containing another is replaced whole. Very short forms
            # cannot occur (keys have >= 32 bytes) and would redact unrelated text.
            ordered = sorted((f for f in forms if len(f) >= 16), key=len, reverse=True)
            self._forms.append((secret.fingerprint, ordered))

    def scrub(self, text: str) -> str:
        with self._lock:
            entries = list(self._forms)
        for fp, forms in entries:
            for form in forms:
                if form in text:
                    text = text.replace(form, f"<redacted sha256:{fp}>")
        return text

    def scrub_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, (bytes, bytearray)):
            return f"<{len(value)} bytes>"  # raw bytes never go to a log
        if isinstance(value, dict):
            return {k: self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub_value(v) for v in value]
        return value


def describe_exc(exc: BaseException, redactor: Redactor | None = None) -> dict[str, str]:
    """Type, message and innermost location of an exception; no traceback, no locals."""
    where = ""
    tb = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if tb:
        frame = tb[-1]
        where = f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {frame.name}"
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable>"
    if redactor is not None:
        message = redactor.scrub(message)
    return {"error_type": type(exc).__name__, "error": message[:300], "where": where}


class EventLog:
    """The watchdog's structlog logger, with redaction applied to every field."""

    def __init__(self, redactor: Redactor, logger: Any = None) -> None:
        self.redactor = redactor
        self._log = logger if logger is not None else structlog.get_logger(LOGGER_NAME)

    def emit(self, level: str, event: str, **fields: Any) -> None:
        clean = {k: self.redactor.scrub_value(v) for k, v in fields.items()}
        # A broken log sink must not stop key syncing.
        with contextlib.suppress(Exception):
            getattr(self._log, level)(event, **clean)
