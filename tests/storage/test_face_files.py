from __future__ import annotations

from pathlib import Path

import pytest

from framebroker.storage import FaceFolder


def test_a_staged_crop_is_whole_on_disk_before_it_gets_its_name(tmp_path: Path) -> None:
    folder = FaceFolder(tmp_path / "faces")
    staged = folder.stage(b"jpeg bytes")
    assert staged.path is not None
    assert staged.path.parent == folder.path
    assert staged.path.read_bytes() == b"jpeg bytes"
    assert not (folder.path / "face_1.jpg").exists()
    assert folder.read("face_1.jpg") is None
    folder.place(staged, "face_1.jpg")
    assert not staged.path.exists()
    assert (folder.path / "face_1.jpg").read_bytes() == b"jpeg bytes"
    assert folder.read("face_1.jpg") == b"jpeg bytes"
    assert folder.present(["face_1.jpg", "face_2.jpg", "../face_1.jpg"]) == {"face_1.jpg"}
    assert folder.read("../face_1.jpg") is None


def test_write_replaces_a_crop_and_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = FaceFolder(tmp_path)
    folder.write("face_3.jpg", b"first")
    folder.write("face_3.jpg", b"better")
    assert (tmp_path / "face_3.jpg").read_bytes() == b"better"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face_3.jpg"]


@pytest.mark.parametrize("name", ["../face_1.jpg", "face_1.png", "face_x.jpg", "notes.txt"])
def test_only_server_made_names_are_written(tmp_path: Path, name: str) -> None:
    folder = FaceFolder(tmp_path / "faces")
    with pytest.raises(ValueError, match=r"face_<id>\.jpg"):
        folder.write(name, b"x")
    assert list(folder.path.iterdir()) == []  # the staged file went too
    assert not (tmp_path / "face_1.jpg").exists()


def test_sweep_removes_what_a_crash_left_and_nothing_else(tmp_path: Path) -> None:
    folder = FaceFolder(tmp_path)
    assert FaceFolder(tmp_path / "absent").sweep(set()) == 0
    folder.write("face_1.jpg", b"indexed")
    folder.write("face_2.jpg", b"row never committed")
    folder.stage(b"killed before its rename")
    (tmp_path / "notes.txt").write_text("not ours")
    (tmp_path / "face_9.jpg").mkdir()  # not a file: left alone
    assert folder.sweep({"face_1.jpg"}) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face_1.jpg", "face_9.jpg", "notes.txt"]
    folder.remove("face_1.jpg")
    folder.remove("face_1.jpg")  # already gone: fine
    folder.remove("../notes.txt")  # not a face name: ignored
    assert (tmp_path / "notes.txt").exists()
