#!/usr/bin/env python3
"""Cut the demo clip shipped in the package out of OpenCV's ``vtest.avi``, with its notice.

``framebroker demo`` runs the people counter on ``src/framebroker/data/demo.mp4``. The clip is
made here rather than copied by hand so anyone can check where it came from and rebuild it
byte for byte: the encoder runs on one thread (x264's output then depends only on its input
and settings) and the MP4 muxer is asked for bit-exact output (no version strings). The
SHA-256 of the result goes into ``NOTICE`` next to the licence, so a changed clip is visible.

The section kept is 45 s to 65 s of ``vtest.avi``: the busiest stretch for people crossing
the middle of the courtyard (walkers on the path plus a few cutting across the lawn towards
the camera), which is what a line counter across the centre needs.

Usage::

    .venv/bin/python scripts/make_demo_clip.py [path/to/vtest.avi]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from fractions import Fraction
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO / ".." / "shared" / "data" / "media" / "vtest.avi"
DEFAULT_OUT_DIR = REPO / "src" / "framebroker" / "data"

# vtest.avi is 768x576 at 10 fps; 640x480 is the same 4:3 picture scaled by exactly 5/6, half
# the bytes of the full size at the same CRF (412 kB against 842 kB), and the input size most
# person detectors use anyway, so nothing a detector could use is lost.
WIDTH, HEIGHT = 640, 480
FPS = 10  # vtest.avi's own rate, kept: no frames are invented or dropped
START_S, DURATION_S = 45.0, 20.0
CRF = 28
# veryslow is the smallest preset (about 10% under "slow" here, at the same quality); the
# default GOP (keyint 250) leaves one keyframe in 200 frames, which is smaller than a 5 s GOP
# by 20%, and seeking in a 20 s clip decodes at most 200 small frames. No -tune: "film" and
# "grain" both came out larger on this footage.
X264_OPTIONS = {"crf": str(CRF), "preset": "veryslow", "profile": "high"}

NOTICE_TEMPLATE = """\
framebroker/data/demo.mp4
=========================

What: {duration:g} s of pedestrians crossing a courtyard, seen by a static elevated camera;
{width}x{height}, {fps} fps, {frames} frames, H.264 (High profile, yuv420p) in MP4,
{size} bytes, SHA-256 {sha256}.

Origin: OpenCV's sample video vtest.avi (768x576, 10 fps, 795 frames, MS-MPEG4v3 in AVI,
SHA-256 {source_sha256}), as shipped in OpenCV's samples/data/vtest.avi and in the
Debian bookworm package opencv-doc 4.6.0+dfsg-12 at
usr/share/doc/opencv-doc/examples/data/vtest.avi.

Licence: Apache-2.0 AND BSD-3-Clause, as Debian's copyright file for OpenCV states.
Copyright the OpenCV authors and contributors. The clip is a derivative of vtest.avi (cut,
scaled and re-encoded, as described below) and is distributed under the same terms.
The Apache License 2.0 is at https://www.apache.org/licenses/LICENSE-2.0; the
BSD-3-Clause terms follow.

  Redistribution and use in source and binary forms, with or without modification, are
  permitted provided that the following conditions are met:

  1. Redistributions of source code must retain the above copyright notice, this list of
     conditions and the following disclaimer.
  2. Redistributions in binary form must reproduce the above copyright notice, this list
     of conditions and the following disclaimer in the documentation and/or other
     materials provided with the distribution.
  3. Neither the name of the copyright holder nor the names of its contributors may be
     used to endorse or promote products derived from this software without specific
     prior written permission.

  THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY
  EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF
  MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL
  THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
  SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT
  OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS
  INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT
  LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
  OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

How it was made: scripts/make_demo_clip.py in the framebroker repository, with PyAV
{av_version} (libavcodec {libavcodec}, libx264). It keeps {start:g} s to {end:g} s of vtest.avi
(frames {first} to {last}), scales them to {width}x{height} with an area filter and re-encodes
them with libx264 ({x264_options}) on one encoder thread, muxed bit-exact
with the index at the front (faststart). Re-running the script with the same PyAV wheel
gives the same bytes.
"""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cut(source: Path, out: Path) -> int:
    """Encode the section into ``out``; returns the number of frames written."""
    with av.open(str(source)) as src:
        in_stream = src.streams.video[0]
        rate = in_stream.average_rate
        if rate is None or Fraction(rate) != FPS:
            sys.exit(f"{source}: expected a {FPS} fps video (vtest.avi), got {rate} fps")
        first, count = round(START_S * FPS), round(DURATION_S * FPS)
        with av.open(
            str(out),
            "w",
            format="mp4",
            options={"movflags": "+faststart"},
            container_options={"fflags": "+bitexact"},
        ) as dst:
            stream = dst.add_stream("libx264", rate=FPS, options=dict(X264_OPTIONS))
            stream.width, stream.height = WIDTH, HEIGHT
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1
            written = 0
            for index, frame in enumerate(src.decode(in_stream)):
                if index < first:
                    continue
                if written == count:
                    break
                scaled = frame.reformat(
                    width=WIDTH, height=HEIGHT, format="yuv420p", interpolation="AREA"
                )
                scaled.pts = written
                scaled.time_base = Fraction(1, FPS)
                dst.mux(stream.encode(scaled))
                written += 1
            dst.mux(stream.encode(None))
    if written != count:
        sys.exit(f"{source}: expected {count} frames from {START_S:g} s, got {written}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    source: Path = args.source.resolve()
    if not source.is_file():
        sys.exit(f"{source}: no such file; get vtest.avi first (see shared/data/media/README.md)")
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    clip = out_dir / "demo.mp4"
    frames = cut(source, clip)
    sha = sha256_of(clip)
    notice = NOTICE_TEMPLATE.format(
        duration=DURATION_S,
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
        frames=frames,
        size=clip.stat().st_size,
        sha256=sha,
        source_sha256=sha256_of(source),
        av_version=av.__version__,
        libavcodec=".".join(map(str, av.library_versions["libavcodec"])),
        start=START_S,
        end=START_S + DURATION_S,
        first=round(START_S * FPS),
        last=round(START_S * FPS) + frames - 1,
        x264_options=" ".join(f"{k}={v}" for k, v in X264_OPTIONS.items()),
    )
    (out_dir / "NOTICE").write_text(notice, encoding="utf-8")
    print(f"wrote {clip} ({clip.stat().st_size} bytes, {frames} frames, sha256 {sha})")
    print(f"wrote {out_dir / 'NOTICE'}")


if __name__ == "__main__":
    main()
