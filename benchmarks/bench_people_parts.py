"""Where a people-counter frame's CPU goes: each part of the pipeline alone, on one thread.

The pipeline ``serve --source`` runs (detect, track, count, traffic events, faces,
annotate with JPEG) is built from the same registry and run frame by frame on vtest's
640x480 frames in this process, one inference thread, no server; reading the video (decode
and conversion to BGR) is timed on its own first. bench_people.py measures the whole server;
this says which part a change should aim at.

    python benchmarks/bench_people_parts.py [--frames 400]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from framebroker.config import Settings
from framebroker.core import Frame, Pipeline, ProcessContext
from framebroker.detectors import runtime
from framebroker.media.video import read_frames
from framebroker.people.feed import PeopleCounterConfig, people_pipeline
from framebroker.server.app import build_registry

CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "media"
CLIP = CLIP / "vtest_640x480_h264.mp4"
WARM_UP = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=400)
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
    config = PeopleCounterConfig(lines=[line])
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


if __name__ == "__main__":
    main()
