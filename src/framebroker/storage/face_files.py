"""Face crops as files beside a SQLite database, written so that no reader and no restart after
a crash finds half a file (:class:`~framebroker.people.records.FaceCrops` on disk).

A crop goes to a temporary name in the faces folder, is flushed to disk, and is renamed over
its final name ``face_<id>.jpg``: the rename is atomic, so that name always holds a whole crop,
the old one or the new one. The index row of a new face commits only once its file is in
place (:meth:`~framebroker.storage.people.SQLPeopleRecords.add_face` takes the rename as a step
of its transaction), so every indexed face has its file. A crash can only leave the reverse
behind: a temporary file, or a file whose row never committed (or whose row was expired just
before). :meth:`FaceFolder.sweep` removes both when the server starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Final

from ..people.records import StagedCrop

__all__ = ["FaceFolder"]

_TMP_PREFIX: Final = ".face-"
_TMP_SUFFIX: Final = ".tmp"
_FACE_NAME: Final = re.compile(r"face_[0-9]+\.jpg")


class FaceFolder:
    """The folder of face crops; every method blocks (call it from a worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"FaceFolder({str(self.path)!r})"

    def stage(self, jpeg: bytes) -> StagedCrop:
        """Write ``jpeg`` to a new temporary file in the folder, flushed to disk.

        fsync here, once per saved face (never per frame), so that a power cut cannot leave
        an empty file under a name whose index row survived.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=self.path)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(jpeg)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        return StagedCrop(jpeg, Path(name))

    def place(self, staged: StagedCrop, name: str) -> None:
        """Rename a staged file to ``name`` (``face_<id>.jpg``), replacing any file there.

        Raises ``ValueError`` for any other name: files are only ever named by the server.
        """
        if not _FACE_NAME.fullmatch(name):
            raise ValueError(f"a face file is named face_<id>.jpg, got {name!r}")
        if staged.path is None:
            raise ValueError("this crop was not staged in a folder")
        os.replace(staged.path, self.path / name)
        self._sync_folder()

    def discard(self, staged: StagedCrop) -> None:
        """Remove a staged file that will not be placed (its row did not commit)."""
        if staged.path is not None:
            staged.path.unlink(missing_ok=True)

    def write(self, name: str, jpeg: bytes) -> None:
        """Replace the file ``name`` with ``jpeg`` atomically (a better crop of a known face)."""
        staged = self.stage(jpeg)
        try:
            self.place(staged, name)
        except BaseException:
            self.discard(staged)
            raise

    def read(self, name: str) -> bytes | None:
        """The crop ``name``, or ``None`` when there is no such file (or no such name)."""
        if not _FACE_NAME.fullmatch(name):
            return None
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None

    def present(self, names: Collection[str]) -> set[str]:
        return {n for n in names if _FACE_NAME.fullmatch(n) and (self.path / n).is_file()}

    def remove(self, name: str) -> None:
        """Delete the file ``name`` if it is there."""
        if _FACE_NAME.fullmatch(name):
            (self.path / name).unlink(missing_ok=True)

    def sweep(self, indexed: set[str]) -> int:
        """Delete what a crash left: temporary files, and face files not in ``indexed``.

        Run it before anything writes to the folder (at start-up); returns how many files
        went. Files that framebroker did not name are left alone.
        """
        if not self.path.is_dir():
            return 0
        removed = 0
        with os.scandir(self.path) as entries:
            for entry in entries:
                name = entry.name
                leftover = name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX)
                orphan = _FACE_NAME.fullmatch(name) is not None and name not in indexed
                if (leftover or orphan) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        return removed

    def _sync_folder(self) -> None:
        """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
