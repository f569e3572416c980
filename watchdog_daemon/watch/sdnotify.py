"""sd_notify(3) without a dependency: one datagram to $NOTIFY_SOCKET.

Outside systemd (no $NOTIFY_SOCKET) every call is a no-op, so the daemon runs the same in a
terminal and in tests. A socket path starting with "@" is Linux's abstract namespace.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        interval: float | None = None
        # WATCHDOG_PID names the process that must ping; if it is another one (we were forked
        # by a wrapper), the watchdog is not ours to feed.
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # Half the timeout, as sd_watchdog_enabled(3) recommends.
            interval = int(usec) / 2_000_000
        self.watchdog_interval = interval
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _target(self) -> str:
        assert self.address is not None
        if self.address.startswith("@"):
            return "\0" + self.address[1:]
        return self.address

    def notify(self, *lines: str) -> bool:
        """Send `KEY=value` lines in one datagram; False when not under systemd or on error."""
        if not self.enabled or not lines:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # MSG_DONTWAIT: a receiver that stopped reading (its queue full) must never block
            # our main loop; a dropped ping is re-sent at the next interval (half the timeout).
            self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), socket.MSG_DONTWAIT,
                              self._target())
        except OSError:
            # systemd gone, restarting or busy: not a reason to stop watching the key.
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={_one_line(status)}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={_one_line(status)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={_one_line(status)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
