"""Face crops kept in the database (any database but SQLite in the server; tested on both)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from framebroker.people.records import FaceCrops
from framebroker.storage import (
    FaceFolder,
    SQLFaceCrops,
    SQLPeopleRecords,
    SQLStore,
    face_crops_for,
)

DAY = "2026-11-21"


def add(records: SQLPeopleRecords, crops: FaceCrops, jpeg: bytes, track: int = 1) -> str:
    staged = crops.stage(jpeg)
    try:
        _, name = records.add_face(
            source="cam", track_id=track, day=DAY, quality=1, score=1,
            place=lambda name: crops.place(staged, name),
        )  # fmt: skip
    except BaseException:
        crops.discard(staged)
        raise
    return name


def test_a_crop_commits_with_its_face_and_goes_with_it(store: SQLStore) -> None:
    records, crops = SQLPeopleRecords(store), SQLFaceCrops(store)
    first = add(records, crops, b"first crop")
    assert crops.read(first) == b"first crop"
    crops.write(first, b"better crop")
    assert crops.read(first) == b"better crop"
    second = add(records, crops, b"second", track=2)
    assert crops.present([first, second, "face_999.jpg", "../x"]) == {first, second}
    assert crops.read("face_999.jpg") is None
    assert crops.read("face_99999999999999999999.jpg") is None  # no SQL integer holds it
    gone = records.expire_faces(keep=1, min_day=DAY)
    assert gone == [first]
    assert crops.read(first) is None  # deleted with its row
    crops.remove(first)
    assert crops.sweep(records.face_filenames()) == 0
    assert crops.read(second) == b"second"


def test_no_crop_without_its_face(store: SQLStore) -> None:
    """The crop is written in the face's own transaction: a failure after it leaves neither."""
    records, crops = SQLPeopleRecords(store), SQLFaceCrops(store)
    staged = crops.stage(b"jpeg")

    def place_then_fail(name: str) -> None:
        crops.place(staged, name)
        with ThreadPoolExecutor(1) as other:  # not visible outside the transaction yet
            assert other.submit(crops.read, name).result() is None
        raise OSError("the face's write failed after its crop")

    with pytest.raises(OSError, match="after its crop"):
        records.add_face(
            source="cam", track_id=1, day=DAY, quality=1, score=1, place=place_then_fail
        )
    assert records.recent_faces() == []
    with store.transaction() as conn:
        from framebroker.storage.schema import face_crops

        assert conn.execute(face_crops.select()).all() == []


def test_only_crop_names_the_server_makes(store: SQLStore) -> None:
    crops = SQLFaceCrops(store)
    with pytest.raises(ValueError, match=r"face_<id>\.jpg"):
        crops.write("../face_1.jpg", b"x")
    with pytest.raises(ValueError, match=r"face_<id>\.jpg"):
        crops.place(crops.stage(b"x"), "notes.txt")
    crops.remove("face_x.jpg")  # not a crop name: nothing to do


def test_crops_are_files_beside_sqlite_and_rows_elsewhere(store: SQLStore, tmp_path: Path) -> None:
    crops = face_crops_for(store, tmp_path / "faces")
    if store.dialect == "sqlite":
        assert isinstance(crops, FaceFolder)
        assert crops.path == tmp_path / "faces"
    else:
        assert isinstance(crops, SQLFaceCrops)
