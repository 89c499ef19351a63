from __future__ import annotations

import stat
from pathlib import Path

import pytest

from framebroker.config import load_settings
from framebroker.core.manager import SESSION_ID_RE
from framebroker.errors import CapacityExceeded, InvalidInput, SessionConflict, SessionNotFound
from framebroker.video_analysis.service import signing_key
from framebroker.video_analysis.session_ids import SessionIds

KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_issued_ids_are_unguessable_url_safe_and_single_use() -> None:
    ids = SessionIds(KEY)
    a, b = ids.issue(), ids.issue()
    assert a != b
    assert SESSION_ID_RE.fullmatch(a)
    assert ids.claim(a) == a
    with pytest.raises(SessionConflict, match="already connected"):
        ids.check(a)
    ids.release(a)
    with pytest.raises(SessionNotFound):
        ids.check(a)  # used up, as the seed removes it from the allowed list
    assert ids.check(b) == b


def test_forged_altered_and_foreign_ids_are_refused() -> None:
    ids = SessionIds(KEY)
    good = ids.issue()
    token, sig = good.split(".")
    altered = token[:-1] + ("A" if token[-1] != "A" else "B") + "." + sig
    for bad in (altered, token, "nope", good + "x", SessionIds(b"o" * 32).issue()):
        with pytest.raises(SessionNotFound):
            ids.check(bad)
    with pytest.raises(InvalidInput, match="required"):
        ids.check(None)
    with pytest.raises(InvalidInput, match="required"):
        ids.check("")


def test_another_server_with_the_same_key_accepts_the_id() -> None:
    assert SessionIds(KEY).check(issued := SessionIds(KEY).issue()) == issued


def test_ids_expire_and_used_up_ones_are_forgotten_after_their_time() -> None:
    clock = Clock()
    ids = SessionIds(KEY, ttl_s=60, clock=clock)
    old = ids.issue()
    clock.now += 61
    with pytest.raises(SessionNotFound):
        ids.check(old)
    used = ids.issue()
    ids.claim(used)
    ids.release(used)
    assert len(ids) == 1
    clock.now += 61
    ids.check(ids.issue())  # sweeps
    assert len(ids) == 0


def test_configured_ids_serve_one_connection() -> None:
    ids = SessionIds(KEY, allowed=["cam-1"])
    assert ids.claim("cam-1") == "cam-1"
    with pytest.raises(SessionConflict):
        ids.claim("cam-1")
    ids.release("cam-1")
    with pytest.raises(SessionNotFound):
        ids.claim("cam-1")


def test_issuing_is_bounded() -> None:
    clock = Clock()
    ids = SessionIds(KEY, ttl_s=10, max_ids=3, clock=clock)
    for _ in range(3):
        ids.issue()
    with pytest.raises(CapacityExceeded, match="limit is 3"):
        ids.issue()
    clock.now += 11
    ids.issue()
    assert ids.claim_new() in ids.in_use


def test_construction_is_checked() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        SessionIds(b"short")
    with pytest.raises(ValueError, match="positive"):
        SessionIds(KEY, ttl_s=0)


def test_processes_on_one_data_directory_share_the_signing_key(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "secret.key"
    settings = load_settings(data_dir=tmp_path).analysis
    first = signing_key(settings, key_file)
    assert len(first) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert signing_key(settings, key_file) == first  # a second worker, or a restart
    handed_out = SessionIds(first).issue()
    assert SessionIds(signing_key(settings, key_file)).claim(handed_out) == handed_out
    key_file.write_bytes(b"short")
    with pytest.raises(ValueError, match="expected a 32-byte key"):
        signing_key(settings, key_file)


def test_a_configured_secret_key_wins_over_the_key_file(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, analysis={"secret_key": "k" * 32}).analysis
    assert signing_key(settings, tmp_path / "secret.key") == b"k" * 32
    assert not (tmp_path / "secret.key").exists()


def test_a_node_prefix_is_signed_with_the_id_and_any_node_with_the_key_accepts_it() -> None:
    issuer, other = SessionIds(KEY), SessionIds(KEY)
    issuer.prefix = "node-a"
    sid = issuer.issue()
    assert sid.startswith("node-a.")
    assert SESSION_ID_RE.fullmatch(sid)
    assert other.claim(sid) == sid  # another node of the cluster, the same key
    moved = "node-b" + sid.removeprefix("node-a")  # the prefix cannot be changed
    for bad in (moved, sid.removeprefix("node-a."), "x" * 80 + "." + sid):
        with pytest.raises(SessionNotFound):
            SessionIds(KEY).check(bad)


def test_verify_accepts_an_id_in_use_for_an_observer_and_unclaim_leaves_it_good() -> None:
    clock = Clock()
    ids = SessionIds(KEY, ttl_s=60, clock=clock)
    sid = ids.claim(ids.issue())
    assert ids.verify(sid) == sid  # in use: observable
    ids.unclaim(sid)
    assert ids.check(sid) == sid  # not used up
    with pytest.raises(InvalidInput):
        ids.verify(None)
    with pytest.raises(SessionNotFound):
        ids.verify("guessed")
    clock.now += 61
    with pytest.raises(SessionNotFound):
        ids.verify(sid)
