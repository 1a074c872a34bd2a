"""One sync at a time per store: an advisory lock beside the database."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class SyncLocked(Exception):
    """Another sync holds the store."""


class StoreLock:
    def __init__(self, store_path: Path | str):
        self.path = Path(str(store_path) + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> "StoreLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise SyncLocked(f"another crm sync (pid {holder}) is running on this store; try again when it has finished") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no pid left behind: holder() reads None
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> int | None:
        """The pid of the sync running on this store, or None; never takes the lock itself
        (a sync starting at the same moment must not find it taken)."""
        try:
            text = self.path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return None
        if not text.isdigit():
            return None
        pid = int(text)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # killed without cleaning up
        except PermissionError:
            pass  # alive, someone else's
        return pid
