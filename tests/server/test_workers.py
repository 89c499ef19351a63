"""The roster the supervisor of ``serve --workers`` keeps, and what /metrics makes of it."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from framebroker.server.workers import RosterCollector, WorkerRecord, read_roster, write_roster


def test_the_roster_reads_back_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    workers = [WorkerRecord(0, "n-w0", 11, 0, 1.0), WorkerRecord(1, "n-w1", 12, 3, 2.0)]
    write_roster(path, 10, workers)
    assert read_roster(path) == workers
    assert [p.name for p in tmp_path.iterdir()] == ["workers.json"]  # no temporary file left


def test_a_missing_or_unreadable_roster_lists_no_worker(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    assert read_roster(path) == []
    path.write_text('{"workers": [{"index": 0}]')
    assert read_roster(path) == []
    path.write_text('{"workers": [{"index": 0}]}')
    assert read_roster(path) == []


def test_metrics_show_each_workers_restarts(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    registry = CollectorRegistry()
    registry.register(RosterCollector(path))
    assert b"framebroker_workers 0.0" in generate_latest(registry)
    workers = [WorkerRecord(0, "n-w0", 11, 0, 1.0), WorkerRecord(1, "n-w1", 0, 2, 2.0)]
    write_roster(path, 10, workers)
    text = generate_latest(registry).decode()
    assert "framebroker_workers 2.0" in text
    assert 'framebroker_worker_restarts_total{worker="0"} 0.0' in text
    assert 'framebroker_worker_restarts_total{worker="1"} 2.0' in text
