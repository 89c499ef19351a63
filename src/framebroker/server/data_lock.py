"""One server process per data directory: an exclusive lock taken before the store is opened.

Two servers on one data directory would both recover "the previous run's" sessions and events
(each other's), write face files into one folder and count the same source twice. The lock is
an ``flock`` on ``DATA_DIR/framebroker.lock``, held by an open file for the life of the
process: the kernel drops it when the process ends, however it ends, so a crash never leaves a
stale lock behind. The file holds the owner's process id, for the refusal message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from ..errors import ConfigError

__all__ = ["LOCK_NAME", "DataDirLock"]

LOCK_NAME = "framebroker.lock"


class DataDirLock:
    """The exclusive lock on one data directory; :meth:`acquire` or a ``ConfigError``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock (creating the directory if needed); returns ``self``.

        Raises :class:`ConfigError` naming the process that holds it, or saying why the
        directory cannot be used. Nothing in the directory is changed when the lock is held
        elsewhere.
        """
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # "a": opening must not truncate the pid a holder wrote.
            file = self.path.open("a+", encoding="ascii")
        except OSError as exc:
            raise ConfigError(
                f"--data-dir {self.data_dir}: cannot use it: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            owner = file.read().strip() or "unknown"
            file.close()
            raise ConfigError(
                f"data directory {self.data_dir} is in use by process {owner}"
            ) from None
        except OSError as exc:  # a file system without locks (some network mounts)
            file.close()
            raise ConfigError(
                f"--data-dir {self.data_dir}: cannot lock {self.path.name}: {exc.strerror or exc}"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        """Drop the lock (the process's end drops it too). Idempotent."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.truncate(0)
            file.close()

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *_: object) -> None:
        self.release()
