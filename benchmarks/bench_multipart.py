"""Parsing one seed-003 request body: framebroker's streaming multipart parser against the floor
(a bare copy of the image) and against werkzeug's decoder (what a Flask server runs).

The body is what a client sends for one 1920x1080 raw BGR frame (6,220,800 bytes) plus its
``frame`` JSON, cut into the chunks a server receives (64 KiB by default). Each row parses
the whole body into the image's bytes and the JSON; only that is timed, not building the body.
The pixels are random, then the kinds of images that are hard on a delimiter search.

    python benchmarks/bench_multipart.py [--chunk 65536] [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import httpx
import numpy as np

from framebroker.transports.multipart import (
    FormLimits,
    MultipartParser,
    PartBuffer,
    PartData,
    PartEnd,
    PartStart,
    form_boundary,
)

WIDTH, HEIGHT = 1920, 1080
LIMITS = FormLimits(max_body_bytes=32 * 1024 * 1024)


def body_of(image: bytes) -> tuple[bytes, bytes]:
    request = httpx.Request(
        "POST",
        "http://localhost:5000/",
        files={
            "image": ("image.raw", image, "application/octet-stream"),
            "frame": ("frame.json", b'{"timestamp": 1556855549.37, "frame_no": 51}', "a/json"),
        },
    )
    return request.read(), form_boundary(request.headers["content-type"])


def framebroker(chunks: list[bytes], boundary: bytes, length: int) -> dict[str, memoryview]:
    """What the server runs (read_form without the async): one block per part, one copy."""
    parser = MultipartParser(boundary, LIMITS)
    parts: dict[str, memoryview] = {}
    name, buffer = "", PartBuffer(0, 1)
    for chunk in chunks:
        parser.receive_data(chunk)
        for event in parser.events_received():
            if isinstance(event, PartData):
                buffer.write(event.data)
            elif isinstance(event, PartStart):
                name = event.name
                buffer = PartBuffer(length if name == "image" else 65536, LIMITS.max_body_bytes)
            elif isinstance(event, PartEnd):
                parts[name] = buffer.view()
    parser.receive_eof()
    return parts


def werkzeug_decoder(chunks: list[bytes], boundary: bytes) -> dict[str, bytes]:
    from werkzeug.sansio.multipart import (
        Data,
        Epilogue,
        Field,
        File,
        MultipartDecoder,
        NeedData,
    )

    decoder = MultipartDecoder(boundary, max_form_memory_size=None)
    parts: dict[str, bytearray] = {}
    name = ""
    for chunk in [*chunks, None]:
        decoder.receive_data(chunk)
        event = decoder.next_event()
        while not isinstance(event, NeedData | Epilogue):
            if isinstance(event, Field | File):
                name = event.name
                parts[name] = bytearray()
            elif isinstance(event, Data):
                parts[name] += event.data
            event = decoder.next_event()
    return {k: bytes(v) for k, v in parts.items()}


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def images() -> dict[str, bytes]:
    n = WIDTH * HEIGHT * 3
    rng = np.random.default_rng(0)
    hexish = np.frombuffer(b"0123456789abcdef\r\n-", np.uint8)
    return {
        "random pixels": rng.integers(0, 256, n, dtype=np.uint8).tobytes(),
        "black": bytes(n),
        "all 0x0d (CR)": b"\r" * n,
        "boundary alphabet": hexish[rng.integers(0, len(hexish), n)].tobytes(),
    }


def measure(image: bytes, chunk: int, repeat: int) -> list[float]:
    """Median ms of: the bare copy, the delimiter scan, framebroker, werkzeug (nan: absent)."""
    body, boundary = body_of(image)
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    assert bytes(framebroker(chunks, boundary, len(body))["image"]) == image
    source = np.frombuffer(image, np.uint8)
    target = np.empty_like(source)
    delimiter = b"\r\n--" + boundary

    def scan() -> None:
        for piece in chunks:
            piece.find(delimiter)

    row = [
        timed(lambda: np.copyto(target, source), repeat),
        timed(scan, repeat),
        timed(lambda: framebroker(chunks, boundary, len(body)), repeat),
    ]
    try:
        import werkzeug  # noqa: F401
    except ImportError:
        return [*row, float("nan")]
    return [*row, timed(lambda: werkzeug_decoder(chunks, boundary), max(1, repeat // 3))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk", type=int, default=65536, help="bytes per received chunk")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    print(f"{WIDTH}x{HEIGHT} raw BGR frame in {args.chunk}-byte chunks, median ms per body")
    print(f"{'image':<20} {'memcpy':>8} {'find':>8} {'framebroker':>12} {'werkzeug':>10}")
    for label, image in images().items():
        copy, scan, ours, theirs = measure(image, args.chunk, args.repeat)
        print(f"{label:<20} {copy:>8.2f} {scan:>8.2f} {ours:>12.2f} {theirs:>10.2f}")
    print("memcpy: np.copyto of the image alone (the floor); find: bytes.find of the delimiter")
    print("over every chunk; framebroker: parse + copy into the image's block; werkzeug: its")
    print("sans-I/O MultipartDecoder, joining each part's data as Flask does.")


if __name__ == "__main__":
    main()
