"""The real server process, driven over real sockets, as the seed's users drive it."""

from __future__ import annotations

import signal
import ssl
from pathlib import Path

import httpx
import trustme

from ..transports.images import decode_b64, jpeg_b64, scene
from ..transports.test_box_tracking import SEED_BOXES, SEED_TRACKED, walking
from .server import running_server


def test_seed_example_over_the_network_and_summaries_survive_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data) as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/", json={"boxes": SEED_BOXES}, headers={"Session-Id": "72d6be50"})
        assert r.status_code == 200, r.text
        assert r.json()["tracked_boxes"] == SEED_TRACKED
        img = scene(640, 480)
        r = c.post(
            "/",
            json={"boxes": SEED_BOXES, "image": jpeg_b64(img)},
            headers={"Session-Id": "72d6be50"},
        )
        assert decode_b64(r.json()["annotated_image"]).shape == img.shape
        assert c.get("/").json()["sessions"] == ["72d6be50"]
        assert c.delete("/", headers={"Session-Id": "72d6be50"}).json()["sessions"] == []

        sid = c.post("/v1/sessions").json()["id"]
        for step in range(5):
            c.post(f"/v1/sessions/{sid}/frames", json={"boxes": walking(step)})
        # This one is still live when the server stops: it must be ended and kept.
        live = c.post("/", json={"boxes": SEED_BOXES}).headers["Session-Id"]

    assert server.proc.returncode == 0, server.output()
    with running_server(data) as server, httpx.Client(base_url=server.url) as c:
        assert c.get("/").json()["sessions"] == []
        ended = c.get("/v1/sessions/72d6be50").json()
        assert ended["state"] == "ended"
        assert ended["summary"]["stats"]["frames_processed"] == 2
        graceful = c.get(f"/v1/sessions/{live}").json()
        assert graceful["summary"]["reason"] == "server_stopped"
        assert c.get(f"/v1/sessions/{sid}").json()["summary"]["results"]["tracker"]["frames"] == 5


def test_killed_server_leaves_a_consistent_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data) as server, httpx.Client(base_url=server.url) as c:
        sid = c.post("/v1/sessions").json()["id"]
        c.post(f"/v1/sessions/{sid}/frames", json={"boxes": SEED_BOXES})
        server.stop(signal.SIGKILL)
    with running_server(data) as server, httpx.Client(base_url=server.url) as c:
        record = c.get(f"/v1/sessions/{sid}").json()
        assert record["state"] == "ended"
        assert record["summary"]["reason"] == "server_restarted"


def test_tls_with_the_seed_flag_spellings(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with (
        running_server(
            tmp_path / "data",
            "--ssl",
            "--ssl_certfile",
            str(certfile),
            "--ssl_keyfile",
            str(keyfile),
            "--max_workers",
            "2",
            scheme="https",
            verify=ctx,
        ) as server,
        httpx.Client(base_url=server.url, verify=ctx) as c,
    ):
        r = c.post("/", json={"boxes": SEED_BOXES}, headers={"Session-Id": "tls"})
        assert r.json()["tracked_boxes"] == SEED_TRACKED


def test_bad_config_exits_with_a_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "framebroker", "serve", "--ssl"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert "ssl needs both ssl_certfile and ssl_keyfile" in proc.stderr


def test_a_server_restart_suspends_sessions_and_they_resume_with_their_tracks(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    alice = [100, 200, 40, 100, 90, 0]
    bob = [400, 200, 40, 100, 90, 0]
    with running_server(data) as server, httpx.Client(base_url=server.url) as c:
        seed = {"Session-Id": "cam-7"}
        assert c.post("/", json={"boxes": [alice]}, headers=seed).json()["tracked_boxes"] == [
            [*alice, 1]
        ]
        c.post("/", json={"boxes": [alice, bob]}, headers=seed)
        assert c.post("/", json={"boxes": [bob]}, headers=seed).json()["tracked_boxes"] == [
            [*bob, 2]
        ]
        v1 = c.post("/v1/sessions").json()["id"]
        for step in range(3):
            c.post(f"/v1/sessions/{v1}/frames", json={"boxes": walking(step)})
    with running_server(data) as server, httpx.Client(base_url=server.url) as c:
        assert c.get("/v1/sessions/cam-7").json()["summary"]["reason"] == "server_stopped"
        # A fresh tracker would call the only person in view 1; the resumed one knows Bob.
        r = c.post("/", json={"boxes": [bob]}, headers={"Session-Id": "cam-7"})
        assert r.json()["tracked_boxes"] == [[*bob, 2]]
        assert c.get("/v1/sessions/cam-7").json()["state"] == "active"
        r = c.post(f"/v1/sessions/{v1}/frames", json={"boxes": walking(3)})
        assert r.json()["frame_index"] == 3
        assert [t["track_id"] for t in r.json()["tracks"]] == [1, 2]


def test_an_unknown_pipeline_option_is_named_and_a_session_shows_its_settings(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path / "data") as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/v1/sessions", json={"pipeline": [{"name": "bytetrack", "track_tresh": 0.6}]})
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["code"] == "processor_load_error"
        assert body["field"] == "pipeline[0].track_tresh"
        message = body["error"]
        for part in ("'track_tresh'", "'bytetrack'", "did you mean 'track_thresh'",
                     "match_thresh, new_track_thresh"):  # fmt: skip
            assert part in message, message
        for python in ("TypeError", "__init__", "keyword argument"):
            assert python not in message, message
        assert c.get("/v1/sessions").json()["sessions"] == []

        r = c.post(
            "/v1/sessions",
            json={"pipeline": [{"name": "bytetrack", "track_thresh": 0.6}, "annotate"]},
        )
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        settings = c.get(f"/v1/sessions/{sid}").json()["settings"]
        assert settings[0]["name"] == "bytetrack"
        assert settings[0]["track_thresh"] == 0.6  # as asked
        assert (settings[0]["match_thresh"], settings[0]["track_buffer"]) == (0.8, 30)  # defaults
        assert settings[1] == {"name": "annotate", "quality": 90, "class_names": None}
