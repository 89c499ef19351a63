"""Where a people-counter frame's CPU goes: each part of the pipeline alone, on one thread.

The pipeline ``serve --source`` runs (detect, track, count, traffic events, faces,
annotate with JPEG) is built from the same registry and run frame by frame on vtest's
640x480 frames in this process, one inference thread, no server; reading the video (decode
and conversion to BGR) is timed on its own first. bench_people.py measures the whole server;
this says which part a change should aim at. vtest shows few people at once, so the counter
is also timed alone on a crowd: ``--tracks`` people (30 by default) walking across its line.

    python benchmarks/bench_people_parts.py [--frames 400] [--tracks 30]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np

from framebroker.config import Settings
from framebroker.core import Detections, Frame, Pipeline, ProcessContext
from framebroker.detectors import runtime
from framebroker.media.sampling import read_frames
from framebroker.people.config import PeopleCounterSettings
from framebroker.people.feed import people_pipeline
from framebroker.processors.line_counter import LineCounter
from framebroker.server.app import build_registry

CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "media"
CLIP = CLIP / "vtest_640x480_h264.mp4"
WARM_UP = 20
CROWD_FRAMES = 3000


def crowd(tracks: int, frames: int) -> list[Frame]:
    """``tracks`` people on a 640x480 picture walking left and right across x = 320 at
    different speeds, each replaced by a new id once off the picture (tracker boxes)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 640, tracks)
    y = rng.uniform(120, 480, tracks)
    speed = rng.choice([-1.0, 1.0], tracks) * rng.uniform(2, 8, tracks)
    ids = np.arange(tracks, dtype=np.int64)
    next_id = tracks
    out = []
    for k in range(frames):
        x += speed + rng.normal(0, 1.5, tracks)  # detections jitter
        gone = (x < 0) | (x > 640)
        if gone.any():
            x[gone] = np.where(speed[gone] > 0, 0.0, 640.0)
            ids[gone] = np.arange(next_id, next_id + int(gone.sum()))
            next_id += int(gone.sum())
        xyxy = np.column_stack([x - 20, y - 100, x + 20, y])
        dets = Detections.from_arrays(xyxy, np.ones(tracks), track_id=ids.copy())
        out.append(Frame(detections=dets, meta={"timestamp": k / 30}))
    return out


def time_counter(tracks: int) -> tuple[float, int]:
    """Milliseconds of this thread's CPU per frame for the counter alone, and its count."""
    frames = crowd(tracks, CROWD_FRAMES)
    line = {"name": "middle", "start": [320, 480], "end": [320, 0], "in": "right"}
    counter = LineCounter(lines=[line])
    ctx = ProcessContext("crowd")
    result = None
    start = time.thread_time()
    for frame in frames:
        result = counter.process(frame, ctx)
    spent = time.thread_time() - start
    assert result is not None
    return 1000 * spent / len(frames), result["count_in"] + result["count_out"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--tracks", type=int, default=30)
    args = parser.parse_args()
    if not CLIP.exists():
        raise SystemExit(f"test clip not found at {CLIP} (see ../shared/data/README.md)")
    images = []
    start = time.thread_time()
    for image, _, _ in read_frames(str(CLIP)):
        images.append(image)
        if len(images) == args.frames:
            break
    reading = (time.thread_time() - start) / len(images)

    runtime.configure(1)
    line = {"name": "middle", "start": [320, 480], "end": [320, 0], "in": "right"}
    config = PeopleCounterSettings(lines=[line])
    registry = build_registry(Settings())
    # One thread here: the stage boundary the server puts after the detector is left out.
    processors = [
        registry.build(
            {k: v for k, v in spec.items() if k != "ends_stage"} if isinstance(spec, dict) else spec
        )
        for spec in people_pipeline(config, day="2026-11-22")
    ]
    pipeline = Pipeline(processors)
    ctx = ProcessContext("parts")
    for k, image in enumerate(images[:WARM_UP]):
        pipeline.run(Frame.from_array(image, meta={"timestamp": k / 10}), ctx)
    spent: Counter[str] = Counter()
    start = time.thread_time()
    for k, image in enumerate(images[WARM_UP:], start=WARM_UP):
        result = pipeline.run(Frame.from_array(image, meta={"timestamp": k / 10}), ctx)
        spent.update(result.timings)
    measured = len(images) - WARM_UP
    whole = (time.thread_time() - start) / measured

    print(f"\nPeople counter, each part alone, vtest 640x480, {measured} frames, one thread\n")
    print("| part | ms per frame (wall) |\n|---|---:|")
    print(f"| reading the video (decode, BGR) | {1000 * reading:.2f} |")
    for name, seconds in spent.items():
        print(f"| {name} | {1000 * seconds / measured:.2f} |")
    print(f"| all of the pipeline, CPU time of this thread | {1000 * whole:.2f} |")
    per_frame, crossings = time_counter(args.tracks)
    print(
        f"| line_counter alone, CPU time of this thread, {args.tracks} people walking across "
        f"({CROWD_FRAMES} frames, {crossings} crossings) | {per_frame:.3f} |"
    )


if __name__ == "__main__":
    main()
