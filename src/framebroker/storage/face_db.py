"""Face crops as rows of the database, for a store that several nodes share.

With PostgreSQL (any database but SQLite) every node must read every crop: ``get_face`` on one
node answers for a face another node saved. Keeping the crops in the database needs nothing
beyond the database the nodes share already (no shared folder to mount and back up apart),
and a crop commits in the very transaction that indexes its face (:meth:`SQLFaceCrops.place`
runs inside :meth:`~framebroker.storage.people.SQLPeopleRecords.add_face`'s transaction), so
no crash can leave a face without its crop or a crop without its face, and nothing needs
sweeping. A crop is a JPEG of a few kilobytes, and ``people.max_faces`` bounds how many are
kept.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final

from sqlalchemy import delete, insert, select, update

from ..people.records import MAX_FACE_ID, StagedCrop
from .schema import face_crops, faces
from .sqlstore import SQLStore

__all__ = ["SQLFaceCrops"]

_FACE_NAME: Final = re.compile(r"face_([0-9]{1,19})\.jpg")


def _face_id(name: str) -> int | None:
    """The face id a crop name carries; ``None`` for a name the server never makes."""
    found = _FACE_NAME.fullmatch(name)
    if found is None or int(found.group(1)) > MAX_FACE_ID:
        return None
    return int(found.group(1))


def _named(name: str) -> int:
    face_id = _face_id(name)
    if face_id is None:
        raise ValueError(f"a face crop is named face_<id>.jpg, got {name!r}")
    return face_id


class SQLFaceCrops:
    """Crops in the ``face_crops`` table, one row per face, deleted with its face."""

    def __init__(self, store: SQLStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"SQLFaceCrops({self._store.shown_url!r})"

    def stage(self, jpeg: bytes) -> StagedCrop:
        """Nothing to prepare: the crop goes in with its face's row."""
        return StagedCrop(bytes(jpeg))

    def place(self, staged: StagedCrop, name: str) -> None:
        """Insert the crop of face ``name``; inside :meth:`add_face` it joins its transaction."""
        face_id = _named(name)
        with self._store.transaction() as conn:
            conn.execute(delete(face_crops).where(face_crops.c.face_id == face_id))
            conn.execute(insert(face_crops).values(face_id=face_id, jpeg=staged.jpeg))

    def discard(self, staged: StagedCrop) -> None:
        """Nothing was written outside the face's transaction."""

    def write(self, name: str, jpeg: bytes) -> None:
        """Replace the crop of a known face; a face expired meanwhile stays gone."""
        with self._store.transaction() as conn:
            conn.execute(
                update(face_crops)
                .where(face_crops.c.face_id == _named(name))
                .values(jpeg=bytes(jpeg))
            )

    def read(self, name: str) -> bytes | None:
        face_id = _face_id(name)
        if face_id is None:
            return None
        with self._store.transaction() as conn:
            jpeg = conn.execute(
                select(face_crops.c.jpeg).where(face_crops.c.face_id == face_id)
            ).scalar_one_or_none()
        return None if jpeg is None else bytes(jpeg)

    def present(self, names: Collection[str]) -> set[str]:
        ids = {face_id: name for name in names if (face_id := _face_id(name)) is not None}
        if not ids:
            return set()
        with self._store.transaction() as conn:
            there = conn.execute(
                select(face_crops.c.face_id).where(face_crops.c.face_id.in_(list(ids)))
            ).scalars()
            return {ids[int(face_id)] for face_id in there}

    def remove(self, name: str) -> None:
        """Delete the crop if it is there (deleting its face already did)."""
        face_id = _face_id(name)
        if face_id is None:
            return
        with self._store.transaction() as conn:
            conn.execute(delete(face_crops).where(face_crops.c.face_id == face_id))

    def sweep(self, indexed: set[str]) -> int:
        """Crops of no face (none should exist: they go with their rows); returns how many
        went. ``indexed`` is not needed: the database knows its faces."""
        with self._store.transaction() as conn:
            gone = conn.execute(
                delete(face_crops).where(face_crops.c.face_id.not_in(select(faces.c.face_id)))
            )
            return int(gone.rowcount)
