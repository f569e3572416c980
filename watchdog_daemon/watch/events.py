"""Event detection on the key's directory with the `watchdog` library, and its self-repair.

Why the directory and not the file: a rotation renames a new file over the key, which inotify
reports on the directory (a watch on the old inode would see nothing). We match the file name.

What watchdog 7.1 emits, checked on this host (inotify):
* `mv tmp key` -> FileMovedEvent(dest=key) only (the temp file's own events carry its name);
* in-place write -> FileOpenedEvent, FileModifiedEvent, FileClosedEvent (IN_CLOSE_WRITE);
* new file -> FileCreatedEvent then modified/closed; `rm` -> FileDeletedEvent;
* chmod and chown -> FileAttribEvent;
* `rm -r dir` -> DirDeletedEvent for the watched directory, then the emitter thread stops while
  the observer thread lives on: events silently stop (FACTS). Re-creating it does not re-arm.
* our own reads of the key emit FileOpenedEvent / FileClosedNoWriteEvent: filtered out below
  (also at the inotify level through `event_filter`), otherwise every read would trigger a run.

FACTS: an exception escaping a handler kills the dispatch thread. The handler therefore only
fires the trigger, inside a catch-all; if it still fails it sets a plain attribute that the
health check turns into a reconcile. `check()` (called every tick by the main loop) re-arms
when the observer or its emitter died or the directory was replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

try:
    from watchdog.events import FileAttribEvent
except ImportError:  # pragma: no cover - watchdog 6.0, the last for Python 3.9 (bullseye, EL9)
    # watchdog 6 reports chmod/chown as FileModifiedEvent (measured on bullseye1): it is still
    # noticed, as a possible in-place write. This class is never emitted there.
    class FileAttribEvent(FileSystemEvent):  # type: ignore[no-redef]
        event_type = "attrib"

EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileAttribEvent,
    DirDeletedEvent,
    DirMovedEvent,
]

# (via, in_place) -> None
OnChange = Callable[[str, bool], None]


def _text(path: str | bytes) -> str:
    return os.fsdecode(path)


def classify(event: FileSystemEvent, key_path: str, dir_path: str) -> bool | None:
    """None: not about the key. Otherwise whether it may be an in-place write (wait for quiet)."""
    src = _text(event.src_path)
    dest = _text(getattr(event, "dest_path", "") or "")
    if isinstance(event, (DirDeletedEvent, DirMovedEvent)):
        # The watched directory itself went away: the key went with it.
        return False if src == dir_path else None
    if isinstance(event, FileMovedEvent):
        # Renamed onto the key (the rotation) or away from it (gone): complete at once.
        return False if key_path in (src, dest) else None
    if src != key_path:
        return None
    if isinstance(event, (FileCreatedEvent, FileModifiedEvent, FileClosedEvent)):
        return True
    if isinstance(event, (FileDeletedEvent, FileAttribEvent)):
        return False
    return None


class KeyEventHandler(FileSystemEventHandler):
    def __init__(self, key_path: Path, on_change: OnChange) -> None:
        super().__init__()
        self.key_path = str(key_path)
        self.dir_path = str(key_path.parent)
        self._on_change = on_change
        self.dirty = False  # set when handling failed: the health check asks for a reconcile
        self.errors = 0

    def dispatch(self, event: FileSystemEvent) -> None:
        # Replaces FileSystemEventHandler.dispatch: one catch-all, nothing may escape.
        try:
            in_place = classify(event, self.key_path, self.dir_path)
            if in_place is not None:
                self._on_change("events", in_place)
        except Exception:
            # No logging here (the logger itself could be what fails): two attribute writes.
            self.errors += 1
            self.dirty = True


ObserverFactory = Callable[[], Any]


class KeyWatcher:
    """Owns the observer; `check()` reports and repairs its health."""

    def __init__(self, key_path: Path, on_change: OnChange, *,
                 observer_factory: ObserverFactory = Observer) -> None:
        self.key_path = key_path
        self.directory = key_path.parent
        self._on_change = on_change
        self._factory = observer_factory
        self._observer: Any = None
        self._dir_id: tuple[int, int] | None = None
        self.handler: KeyEventHandler | None = None
        self.rearms = 0
        self.state = "stopped"  # armed | dir_missing | failed | stopped

    def _dir_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.directory)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def arm(self) -> str:
        self._disarm()
        ident = self._dir_identity()
        if ident is None:
            self.state = "dir_missing"
            return self.state
        handler = KeyEventHandler(self.key_path, self._on_change)
        observer = self._factory()
        try:
            observer.schedule(handler, str(self.directory), recursive=False,
                              event_filter=EVENT_FILTER)
            observer.start()
        except Exception:
            # inotify limits reached, directory vanished between stat and watch...: retry later
            self._stop_observer(observer)
            self.state = "failed"
            return self.state
        self._observer, self.handler, self._dir_id = observer, handler, ident
        self.state = "armed"
        return self.state

    def alive(self) -> bool:
        obs = self._observer
        if obs is None or not obs.is_alive():
            return False
        emitters = list(getattr(obs, "emitters", ()))
        return bool(emitters) and all(e.is_alive() for e in emitters)

    def check(self) -> str:
        """One health tick. Returns "ok", "dirty", "rearmed", "dir_missing" or "failed".

        Anything but "ok" means events may have been lost: the caller reconciles.
        """
        if self.state == "armed" and self.alive() and self._dir_identity() == self._dir_id:
            if self.handler is not None and self.handler.dirty:
                self.handler.dirty = False
                return "dirty"
            return "ok"
        previous = self.state
        state = self.arm()
        if state == "armed":
            self.rearms += 1
            return "rearmed"
        # Still missing: report only the transition; the caller keeps reconciling meanwhile.
        return state if state != previous else f"still_{state}"

    @property
    def healthy(self) -> bool:
        """Event watching works, or cannot work for a reason outside us (directory missing)."""
        return self.state == "dir_missing" or (self.state == "armed" and self.alive())

    def _disarm(self) -> None:
        if self._observer is not None:
            self._stop_observer(self._observer)
        self._observer, self.handler, self._dir_id = None, None, None

    @staticmethod
    def _stop_observer(observer: Any) -> None:
        try:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=2.0)
        except Exception:  # noqa: S110 - a broken observer is being thrown away anyway
            pass

    def stop(self) -> None:
        self._disarm()
        self.state = "stopped"
