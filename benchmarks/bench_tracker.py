"""ByteTrack update() cost per frame: framebroker against the trackers a user would pick instead.

All frames of the four MOT17 sequences in ../shared/data/mot, demo configuration (track_thresh
0.5, match_thresh 0.8, track_buffer 30, frame rate from seqinfo.ini). Only update() is timed;
each implementation is warmed up on one frame first (framebroker's kernel loads its compiled
code then). Implementations not installed are listed as such.

    python benchmarks/bench_tracker.py [--repeat 3] [--data ../shared/data/mot]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from framebroker.processors.bytetrack import ByteTrack, ByteTrackConfig
from framebroker.processors.bytetrack.mot import MotSequence, load_sequence

REFERENCE_US = 956.0  # ifzhang/ByteTrack on these files, 2-core CPU (shared/data/README.md)
SEQUENCES = ["MOT17-02-FRCNN", "MOT17-04-FRCNN", "MOT17-05-FRCNN", "MOT17-09-FRCNN"]
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mot"

Step = Callable[[np.ndarray, np.ndarray], object]


def ours(seq: MotSequence) -> Step:
    tracker = ByteTrack(ByteTrackConfig(0.5, 0.8, 30, seq.frame_rate))
    return tracker.update


def roboflow_trackers(seq: MotSequence) -> Step:
    import supervision as sv
    from trackers import ByteTrackTracker

    # Their names for the same knobs: IoU >= 0.2 is our cost <= 0.8.
    tracker = ByteTrackTracker(
        lost_track_buffer=30,
        frame_rate=seq.frame_rate,
        track_activation_threshold=0.6,
        high_conf_det_threshold=0.5,
        minimum_iou_threshold=0.2,
    )

    def step(boxes: np.ndarray, scores: np.ndarray) -> object:
        det = sv.Detections(xyxy=boxes, confidence=scores, class_id=np.zeros(len(scores), int))
        return tracker.update(det)

    return step


def supervision_bytetrack(seq: MotSequence) -> Step:
    import supervision as sv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracker = sv.ByteTrack(
            track_activation_threshold=0.5,
            lost_track_buffer=30,
            minimum_matching_threshold=0.8,
            frame_rate=int(seq.frame_rate),
        )

    def step(boxes: np.ndarray, scores: np.ndarray) -> object:
        det = sv.Detections(xyxy=boxes, confidence=scores, class_id=np.zeros(len(scores), int))
        return tracker.update_with_detections(det)

    return step


IMPLEMENTATIONS: dict[str, Callable[[MotSequence], Step]] = {
    "framebroker ByteTrack": ours,
    "trackers 2.6.1 ByteTrackTracker": roboflow_trackers,
    "supervision ByteTrack": supervision_bytetrack,
}


def measure(make: Callable[[MotSequence], Step], seqs: list[MotSequence]) -> np.ndarray:
    times: list[float] = []
    for seq in seqs:
        step = make(seq)
        _, boxes, scores = next(iter(seq))
        make(seq)(boxes, scores)  # warm-up on a throwaway instance
        clock = time.perf_counter
        for _, boxes, scores in seq:
            t0 = clock()
            step(boxes, scores)
            times.append(clock() - t0)
    return np.array(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=3, help="runs per implementation; best kept")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"MOT data not found at {args.data} (see ../shared/data/README.md)")
    seqs = [load_sequence(args.data / name) for name in SEQUENCES]
    n_frames = sum(s.length for s in seqs)
    rows: list[tuple[str, float, float, float]] = []
    missing: list[str] = []
    for name, make in IMPLEMENTATIONS.items():
        try:
            runs = [measure(make, seqs) for _ in range(args.repeat)]
        except ImportError as exc:
            missing.append(f"{name} ({exc.name} not installed)")
            continue
        best = min(runs, key=lambda r: float(np.median(r)))
        rows.append(
            (name, float(np.median(best)), float(np.percentile(best, 99)), 1e6 / float(best.mean()))
        )
    ours_median = rows[0][1]
    print(
        f"\nByteTrack update() per frame: {n_frames} MOT17 frames, demo config, "
        f"best of {args.repeat}\n"
    )
    print("| implementation | median µs | p99 µs | fps | median vs framebroker |")
    print("|---|---:|---:|---:|---:|")
    for name, med, p99, fps in rows:
        print(f"| {name} | {med:.1f} | {p99:.1f} | {fps:.0f} | {med / ours_median:.1f}x |")
    print(
        f"| reference ifzhang/ByteTrack (measured on these files, data README) "
        f"| {REFERENCE_US:.0f} | | | {REFERENCE_US / ours_median:.1f}x |"
    )
    for m in missing:
        print(f"\nnot measured: {m}; install with benchmarks/requirements.txt")


if __name__ == "__main__":
    main()
