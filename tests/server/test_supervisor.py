"""What the supervisor of ``serve --workers`` gives each worker, and how it takes a worker's
death (the processes themselves: ``tests/e2e/test_workers.py``)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from framebroker.compat import COMPAT_PORTS
from framebroker.config import load_settings
from framebroker.server.serve import bind_worker_listeners
from framebroker.server.supervisor import Supervisor, _prepare_store, worker_settings
from framebroker.storage.face_files import FaceFolder


def test_each_worker_is_a_node_of_the_cluster_on_the_bound_ports() -> None:
    settings = load_settings(workers=2, sources=["demo=clip.mp4"], compat=True)
    ports = {"http": 8123, "frames": 5123}
    made = [
        worker_settings(
            settings, i, node="box-1", url="unix:///r.sock", secret="s" * 32, private=True,
            ports=ports,
        )
        for i in range(2)
    ]  # fmt: skip
    assert [w.node_id for w in made] == ["box-1-w0", "box-1-w1"]
    assert all(w.workers is None and w.port == 8123 for w in made)
    assert made[0].compat_ports["frames"] == 5123
    assert made[0].compat_ports["people_ws"] == settings.compat_ports["people_ws"]
    assert set(made[0].compat_ports) == set(settings.compat_ports)
    # Every worker follows every source's lease: one runs it, the other takes it over.
    assert [w.sources for w in made] == [["demo=clip.mp4"], ["demo=clip.mp4"]]
    for w in made:
        assert w.cluster.url == "unix:///r.sock"
        assert (w.cluster.relay_host, w.cluster.address, w.cluster.relay_port) == (
            "127.0.0.1", "127.0.0.1", 0,
        )  # fmt: skip
        assert w.analysis.secret_key is not None
        assert w.analysis.secret_key.get_secret_value() == "s" * 32


def test_with_a_cluster_given_relays_are_as_configured_one_port_each() -> None:
    settings = load_settings(
        workers=2,
        cluster={"url": "redis://r:6379/0", "relay_port": 9000, "address": "10.0.0.5"},
        analysis={"secret_key": "k" * 32},
    )
    made = [
        worker_settings(
            settings, i, node="n", url="redis://r:6379/0", secret="x" * 32, private=False,
            ports={"http": 8000},
        )
        for i in range(2)
    ]  # fmt: skip
    assert [w.cluster.relay_port for w in made] == [9000, 9001]
    assert {w.cluster.address for w in made} == {"10.0.0.5"}
    assert {w.cluster.relay_host for w in made} == {None}
    assert made[0].analysis.secret_key == SecretStr("k" * 32)


class Exited:
    """What the supervisor reads of a process that ended."""

    def __init__(self, returncode: int, pid: int = 42) -> None:
        self.returncode = returncode
        self.pid = pid


def died(supervisor: Supervisor, code: int, lived_s: float) -> Any:
    slot = supervisor.slots[0]
    slot.started = 100.0
    slot.process = Exited(code)  # type: ignore[assignment]
    supervisor._died(slot, slot.process, 100.0 + lived_s)  # type: ignore[arg-type]
    return slot


@pytest.fixture
def supervisor(tmp_path: Path) -> Supervisor:
    return Supervisor(
        [load_settings(node_id="n-w0")], [{}], roster=tmp_path / "workers.json", app_dir=tmp_path
    )


def test_a_worker_that_cannot_start_stops_the_supervisor(supervisor: Supervisor) -> None:
    died(supervisor, 2, lived_s=3)
    assert supervisor.failed


def test_a_killed_worker_is_started_again_at_once(supervisor: Supervisor) -> None:
    slot = died(supervisor, -9, lived_s=60)
    assert not supervisor.failed
    assert (slot.restarts, slot.due, slot.process) == (1, 160.0, None)


def test_a_worker_that_keeps_dying_is_started_again_ever_later(supervisor: Supervisor) -> None:
    delays = []
    for _ in range(9):
        slot = died(supervisor, 1, lived_s=1)
        delays.append(slot.due - 101.0)
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert supervisor.slots[0].restarts == 9
    slot = died(supervisor, -9, lived_s=60)  # a long life resets the delay
    assert slot.due == 160.0


def test_exit_status_2_after_a_restart_is_one_more_death(supervisor: Supervisor) -> None:
    died(supervisor, -9, lived_s=60)
    died(supervisor, 2, lived_s=1)
    assert not supervisor.failed
    assert supervisor.slots[0].restarts == 2


def test_the_worker_module_refuses_to_run_by_hand() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "framebroker.server.worker"],
        input=b"\x80\x04N.",  # pickled None
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"started by serve --workers" in done.stderr


def test_the_supervisor_sweeps_a_crash_s_face_crops_before_any_worker_starts(
    tmp_path: Path,
) -> None:
    """Workers never sweep (one may write a face while another starts); the supervisor
    does, once, while nothing writes."""
    settings = load_settings(data_dir=tmp_path, workers=2)
    folder = FaceFolder(settings.faces_dir)
    folder.write("face_3.jpg", b"its row never committed")
    folder.stage(b"killed before its rename")
    (settings.faces_dir / "notes.txt").write_text("not ours")
    _prepare_store(settings)
    assert [p.name for p in settings.faces_dir.iterdir()] == ["notes.txt"]


def test_each_worker_listens_on_a_socket_of_its_own_and_connections_spread_over_them() -> None:
    """``SO_REUSEPORT``: the kernel spreads connections over the workers' sockets by a hash,
    where one shared socket gives a burst to whichever worker accepts first."""
    settings = load_settings(
        host="127.0.0.1", port=0, compat=True, compat_ports=dict.fromkeys(COMPAT_PORTS, 0)
    )
    bound = bind_worker_listeners(settings, 2)
    try:
        assert bound[0].keys() == bound[1].keys()
        assert "http" in bound[0]
        assert len(bound[0]) > 1  # the compat listeners too
        for name, (port, sock) in bound[0].items():
            assert bound[1][name][0] == port == sock.getsockname()[1]
            assert bound[1][name][1].fileno() != sock.fileno()
        port = bound[0]["http"][0]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        accepted = []
        for listeners in bound:
            sock = listeners["http"][1]
            sock.setblocking(False)
            taken = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    taken.append(sock.accept()[0])
            accepted.append(len(taken))
            for conn in taken:
                conn.close()
        for client in clients:
            client.close()
        assert sum(accepted) == 64
        assert min(accepted) >= 16, accepted  # even: 32 each, give or take the hash
    finally:
        for listeners in bound:
            for _, sock in listeners.values():
                sock.close()
