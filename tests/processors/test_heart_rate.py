"""HeartRate and its rPPG maths: known pulses in, their rate out; no face, no pulse, no crash."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from framebroker.core import Frame, ProcessContext
from framebroker.detectors.blazeface import BlazeFace, FaceDetections
from framebroker.errors import ProcessorLoadError
from framebroker.plugins import ProcessorRegistry
from framebroker.processors.heart_rate import SKIN_REGIONS, HeartRate, skin_colour
from framebroker.processors.rppg import (
    bandpass,
    estimate_pulse,
    pos,
    resample_uniform,
    spectral_peak,
)

from .rppg_video import EPOCH, PULSE_BGR, PulsingFace, frames, jittered_times, steady_times

Array = NDArray[np.float64]
FS = 30.0
PULSE_RGB = PULSE_BGR[::-1].astype(np.float64)


def sine(bpm: float, seconds: float = 10.0, fs: float = FS, phase: float = 0.3) -> Array:
    t = np.arange(round(seconds * fs)) / fs
    out: Array = np.sin(2 * np.pi * bpm / 60.0 * t + phase)
    return out


def skin_series(bpm: float, seconds: float = 10.0, *, noise: float = 0.0, seed: int = 0) -> Array:
    """Mean skin (R, G, B) of a pulsing face under drifting light, as a camera would see it."""
    t = np.arange(round(seconds * FS)) / FS
    pulse = 0.004 * np.sin(2 * np.pi * bpm / 60.0 * t)
    light = 1.0 + 0.2 * np.sin(2 * np.pi * t / 15.0) + 0.02 * t
    tone = np.array([180.0, 130.0, 110.0])
    rgb: Array = tone * light[:, None] * (1.0 + pulse[:, None] * PULSE_RGB / PULSE_RGB[1])
    rng = np.random.default_rng(seed)
    return rgb + rng.normal(0.0, noise, rgb.shape)


# --- the signal maths -------------------------------------------------------------------------


@pytest.mark.parametrize("bpm", [42.0, 54.0, 72.5, 96.0, 120.0, 180.0, 235.0])
def test_spectral_peak_reads_a_sinusoid_to_a_fraction_of_a_beat(bpm: float) -> None:
    est = spectral_peak(sine(bpm), FS)
    assert est is not None
    assert est.bpm == pytest.approx(bpm, abs=0.3)
    assert est.quality > 0.85
    assert est.snr_db > 7.0


def test_spectral_peak_prefers_the_fundamental_to_a_strong_harmonic() -> None:
    wave = sine(60.0) + 0.7 * sine(120.0, phase=1.0)
    est = spectral_peak(wave, FS)
    assert est is not None
    assert est.bpm == pytest.approx(60.0, abs=0.3)
    # The harmonic is pulse energy, not noise: quality stays high.
    assert est.quality > 0.85


def test_spectral_peak_ignores_what_is_outside_the_band() -> None:
    wave = 5 * sine(20.0) + 5 * sine(300.0) + 0.5 * sine(90.0)
    est = spectral_peak(wave, FS)
    assert est is not None
    assert est.bpm == pytest.approx(90.0, abs=0.3)


def test_noise_scores_low_and_a_constant_scores_nothing() -> None:
    rng = np.random.default_rng(0)
    qualities = []
    for _ in range(100):
        est = spectral_peak(bandpass(rng.normal(size=300), FS), FS)
        assert est is not None
        qualities.append(est.quality)
    assert np.median(qualities) < 0.3
    assert max(qualities) < 0.5
    assert spectral_peak(np.full(300, 7.0), FS) is None


def test_spectral_peak_rejects_a_too_short_signal() -> None:
    with pytest.raises(ValueError, match="at least 8 samples"):
        spectral_peak(np.zeros(5), FS)


def test_resample_uniform_interpolates_uneven_samples_onto_a_grid_ending_at_the_last() -> None:
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.uniform(1 / 30, 1 / 20, 200)) + EPOCH
    values = np.stack([2.0 * (times - EPOCH), 5.0 - (times - EPOCH)], axis=1)
    out = resample_uniform(times, values, 30.0, 5.0)
    assert out.shape == (150, 2)
    grid = times[-1] - (149 - np.arange(150)) / 30.0 - EPOCH
    np.testing.assert_allclose(out[:, 0], 2.0 * grid, atol=1e-5)
    np.testing.assert_allclose(out[:, 1], 5.0 - grid, atol=1e-5)


@pytest.mark.parametrize(
    ("times", "values", "match"),
    [
        (np.arange(4.0), np.zeros((3, 3)), "expected times"),
        (np.arange(1.0), np.zeros((1, 3)), "at least 2"),
        (np.array([0.0, 1.0, 1.0]), np.zeros((3, 3)), "increase strictly"),
    ],
)
def test_resample_uniform_rejects_bad_series(times: Array, values: Array, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resample_uniform(times, values, 30.0, 1.0)


def test_bandpass_keeps_the_pulse_and_drops_drift_and_flicker() -> None:
    t = np.arange(600) / FS
    pulse = np.sin(2 * np.pi * 1.2 * t)
    wave = pulse + 3 * np.sin(2 * np.pi * 0.05 * t) + 2 * t / 20 + np.sin(2 * np.pi * 10 * t)
    out = bandpass(wave, FS)
    middle = slice(150, 450)  # the ends carry the filter's edge effects
    np.testing.assert_allclose(out[middle], pulse[middle], atol=0.06)
    with pytest.raises(ValueError, match="fs / 2"):
        bandpass(wave, 6.0, 0.7, 4.0)


def test_pos_cancels_light_changes_that_hit_every_channel_alike() -> None:
    t = np.arange(300) / FS
    light = 1.0 + 0.3 * np.sin(2 * np.pi * 1.5 * t)  # in the heart-rate band, and big
    rgb = np.array([180.0, 130.0, 110.0]) * light[:, None]
    assert np.abs(pos(rgb, FS)).max() < 1e-9


def test_pos_finds_the_pulse_through_skin_tone_light_and_noise() -> None:
    for bpm in (48.0, 75.0, 110.0, 150.0):
        est = estimate_pulse(skin_series(bpm, noise=0.05, seed=int(bpm)), FS)
        assert est is not None
        assert est.bpm == pytest.approx(bpm, abs=1.0)
        assert est.quality > 0.7


def test_pos_handles_a_still_colour_and_a_series_shorter_than_its_window() -> None:
    still = np.full((100, 3), 120.0)
    np.testing.assert_array_equal(pos(still, FS), np.zeros(100))
    assert estimate_pulse(still, FS) is None
    assert pos(still[:10], FS).shape == (10,)
    assert pos(np.zeros((0, 3)), FS).shape == (0,)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        pos(np.zeros((10, 4)), FS)
    with pytest.raises(ValueError, match="> 0"):
        pos(np.zeros((10, 3)), FS)


# --- the processor on made-up footage ---------------------------------------------------------


def run(hr: HeartRate, source: PulsingFace, times: list[float]) -> list[tuple[float, Any]]:
    """(seconds from the start, output) for every frame, through ``process`` directly."""
    ctx = ProcessContext("s")
    hr.setup(ctx)
    return [(f.timestamp - EPOCH, hr.process(f, ctx)) for f in frames(source, times)]


def readings(outputs: list[tuple[float, Any]]) -> list[tuple[float, dict[str, Any]]]:
    return [(t, out["heart_rate"]) for t, out in outputs if out is not None]


def check_estimates(outputs: list[tuple[float, Any]], bpm: float, seconds: float) -> None:
    got = readings(outputs)
    # Nothing before the window is full, then one reading a second of frame time.
    assert got[0][0] == pytest.approx(10.0, abs=0.1)
    assert len(got) == math.floor(seconds - 10.0) + 1 or len(got) == math.floor(seconds - 10.0)
    for t, r in got:
        assert r["face"] is True
        assert r["heart_rate_bpm"] is not None, f"no reading at {t:.2f} s: {r}"
        assert abs(r["heart_rate_bpm"] - bpm) <= 3.0, f"{r} at {t:.2f} s, expected {bpm}"
        assert r["quality"] > 0.6


@pytest.mark.parametrize("bpm", [54.0, 72.0, 96.0, 120.0])
def test_reads_the_pulse_of_a_face_at_30_fps(bpm: float) -> None:
    hr = HeartRate()
    outputs = run(hr, PulsingFace(bpm, seed=int(bpm)), steady_times(16.0))
    check_estimates(outputs, bpm, 16.0)
    end = hr.end(ProcessContext("s"))
    assert end is not None
    summary = end["heart_rate"]
    assert summary["estimates"] == len(readings(outputs))
    assert summary["low_quality"] == 0
    assert abs(summary["mean_bpm"] - bpm) <= 3.0
    assert bpm - 3.0 <= summary["min_bpm"] <= summary["mean_bpm"] <= summary["max_bpm"] <= bpm + 3
    assert 0.6 < summary["mean_quality"] <= 1.0


@pytest.mark.parametrize("bpm", [66.0, 108.0])
def test_reads_the_pulse_when_frames_come_unevenly_at_20_to_30_fps(bpm: float) -> None:
    times = jittered_times(16.0, 20.0, 30.0, seed=int(bpm))
    gaps = np.diff(times)
    assert gaps.min() < 0.035  # really uneven
    assert gaps.max() > 0.048
    outputs = run(HeartRate(), PulsingFace(bpm, seed=3), times)
    check_estimates(outputs, bpm, times[-1])


def test_a_face_with_no_pulse_gives_low_quality_and_no_rate() -> None:
    hr = HeartRate()
    got = readings(run(hr, PulsingFace(0.0, seed=5), steady_times(16.0)))
    assert len(got) >= 6
    qualities = [r["quality"] for _, r in got]
    assert max(qualities) < 0.5
    assert all(r["face"] is True and r["heart_rate_bpm"] is None for _, r in got)
    end = hr.end(ProcessContext("s"))
    assert end == {
        "heart_rate": {
            "estimates": 0,
            "low_quality": len(got),
            "mean_bpm": None,
            "min_bpm": None,
            "max_bpm": None,
            "mean_quality": None,
        }
    }


class CountingBlazeFace(BlazeFace):
    """The real detector, counting its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def detect(
        self, image_bgr: NDArray[np.uint8], *, score_thresh: float | None = None
    ) -> FaceDetections:
        self.calls += 1
        return super().detect(image_bgr, score_thresh=score_thresh)


def test_no_face_says_so_once_a_second_and_searches_every_few_frames() -> None:
    detector = CountingBlazeFace()
    hr = HeartRate(detector=detector, detect_every=10)
    times = steady_times(12.0)
    got = readings(run(hr, PulsingFace(72.0, away=(0.0, 1e9)), times))
    assert [r for _, r in got] == [{"face": False}] * len(got)
    assert [round(t, 3) for t, _ in got] == [float(s) for s in range(12)]
    assert detector.calls == len(times) // 10
    assert hr.buffered == 0
    end = hr.end(ProcessContext("s"))
    assert end is not None
    assert end["heart_rate"]["estimates"] == 0
    assert end["heart_rate"]["mean_bpm"] is None


def test_a_face_that_leaves_and_returns_starts_a_new_window() -> None:
    # A 5 s window keeps the test short; it blurs the spectrum, hence a lower min_quality.
    hr = HeartRate(window_s=5.0, min_quality=0.3)
    source = PulsingFace(90.0, away=(8.0, 10.0), seed=2)
    got = readings(run(hr, source, steady_times(17.0)))
    before = [(t, r) for t, r in got if t < 8.0]
    during = [(t, r) for t, r in got if 8.0 <= t < 10.0]
    after = [(t, r) for t, r in got if t >= 10.0]
    assert before[0][0] == pytest.approx(5.0, abs=0.1)
    assert all(abs(r["heart_rate_bpm"] - 90.0) <= 3.0 for _, r in before)
    # Noticed on the first frame without a face: the skin colour jumps, the search runs at once.
    assert during[0][0] == pytest.approx(8.0, abs=0.05)
    assert all(r == {"face": False} for _, r in during)
    # Back at 10 s: found again within detect_every frames, then a full window to wait.
    first = after[0][0]
    assert 15.0 <= first <= 15.0 + 10 / 30.0 + 0.05
    assert all(abs(r["heart_rate_bpm"] - 90.0) <= 3.0 for _, r in after)


def test_a_clock_that_goes_back_starts_a_new_window() -> None:
    hr = HeartRate(window_s=5.0, min_quality=0.3)
    source = PulsingFace(80.0, seed=4)
    ctx = ProcessContext("s")
    hr.setup(ctx)
    first = [hr.process(f, ctx) for f in frames(source, steady_times(6.0))]
    assert any(out is not None for out in first)
    again = [hr.process(f, ctx) for f in frames(source, steady_times(5.5))]
    t_first = [k / 30.0 for k, out in enumerate(again) if out is not None]
    assert t_first
    assert t_first[0] == pytest.approx(5.0, abs=0.05)


def test_the_sample_buffer_is_bounded_however_fast_frames_come() -> None:
    image = PulsingFace(72.0).image(0.0)
    hr = HeartRate(window_s=4.0, max_fps=50.0)
    ctx = ProcessContext("s")
    hr.setup(ctx)
    for k in range(3000):  # 1000 fps: 3 s, less than the window
        hr.process(Frame.from_array(image, meta={"timestamp": EPOCH + k / 1000.0}), ctx)
    # A sample per 1/50 s over the 4 s window plus the one before it; far under maxlen.
    assert hr.buffered <= 3.0 * 50 + 2
    for k in range(3000, 7000):
        hr.process(Frame.from_array(image, meta={"timestamp": EPOCH + k / 1000.0}), ctx)
    assert 4.0 * 50 - 2 <= hr.buffered <= 4.0 * 50 + 2


def test_picks_the_biggest_face_and_keeps_it() -> None:
    small = PulsingFace(72.0, head_width=200, sway_px=0).image(0.0)
    big = PulsingFace(72.0, head_width=330, sway_px=0, size=(480, 640)).image(0.0)
    scene = big.copy()
    scene[:, :240] = 105
    scene[20:260, 10:230] = small[100:340, 220:440]
    hr = HeartRate()
    ctx = ProcessContext("s")
    hr.setup(ctx)
    hr.process(Frame.from_array(scene, meta={"timestamp": 0.0}), ctx)
    box = hr.face_box
    assert box is not None
    assert box[0] > 240  # the big face, on the right
    assert skin_colour(scene, np.array(box)) is not None


def test_skin_colour_averages_the_patches_in_rgb_and_skips_what_is_off_the_picture() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[...] = (10, 20, 30)  # B, G, R
    assert skin_colour(image, np.array([10.0, 10.0, 90.0, 90.0])) == (30.0, 20.0, 10.0)
    assert skin_colour(image, np.array([200.0, 200.0, 300.0, 300.0])) is None
    assert len(SKIN_REGIONS) == 3


def test_a_frame_without_pixels_is_passed_over() -> None:
    hr = HeartRate()
    assert hr.process(Frame(meta={"timestamp": 1.0}), ProcessContext("s")) is None


def test_snapshot_keeps_the_session_statistics() -> None:
    hr = HeartRate()
    run(hr, PulsingFace(72.0, seed=9), steady_times(13.0))
    ctx = ProcessContext("s")
    state = hr.snapshot()
    assert state is not None
    resumed = HeartRate()
    resumed.restore(state)
    assert resumed.end(ctx) == hr.end(ctx)
    empty = HeartRate()
    empty_state = empty.snapshot()
    assert empty_state is not None
    resumed.restore(empty_state)
    assert resumed.end(ctx) == empty.end(ctx)


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 2},
        {
            "version": 1,
            "estimates": 2,
            "low_quality": 0,
            "sum_bpm": 140.0,
            "sum_quality": 1.6,
            "min_bpm": 75.0,
            "max_bpm": 65.0,
        },
        {
            "version": 1,
            "estimates": 0,
            "low_quality": 0,
            "sum_bpm": 0.0,
            "sum_quality": 0.0,
            "min_bpm": 60.0,
            "max_bpm": None,
        },
        {
            "version": 1,
            "estimates": -1,
            "low_quality": 0,
            "sum_bpm": 0.0,
            "sum_quality": 0.0,
            "min_bpm": None,
            "max_bpm": None,
        },
    ],
)
def test_restore_rejects_a_state_it_did_not_write(state: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="expected a HeartRate snapshot"):
        HeartRate().restore(state)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_s": 2.0}, "window_s must be a number in"),
        ({"window_s": math.nan}, "window_s must be a number in"),
        ({"emit_interval_s": 0}, "emit_interval_s must be a number in"),
        ({"fs": 5.0}, "fs must be a number in"),
        ({"pos_window_s": 6.0}, "pos_window_s must be a number in"),
        ({"min_bpm": 100.0, "max_bpm": 90.0}, "max_bpm must be > min_bpm"),
        ({"fs": 10.0, "max_bpm": 300.0}, r"fs must be more than twice max_bpm / 60 \(10 Hz\)"),
        ({"min_bpm": "42"}, "min_bpm must be a number in"),
        ({"min_quality": 1.5}, "min_quality must be a number in"),
        ({"detect_every": 0}, "detect_every must be an integer in"),
        ({"detect_every": 2.5}, "detect_every must be an integer in"),
        ({"min_face_px": True}, "min_face_px must be an integer in"),
        ({"score_thresh": 1.0}, "score_thresh must be a number in"),
        ({"score_thresh": 0.0}, "score_thresh must be a number in"),
        ({"box_smoothing": 1.0}, "box_smoothing must be a number in"),
        ({"max_gap_s": 0.0}, "max_gap_s must be a number in"),
        ({"max_fps": 5.0}, "max_fps must be a number in"),
        ({"detector": "blazeface"}, "detector must be a BlazeFace"),
    ],
)
def test_the_constructor_names_the_bad_parameter(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HeartRate(**kwargs)


def test_loads_by_path_and_runs_in_a_pipeline() -> None:
    registry = ProcessorRegistry()
    spec = {
        "name": "framebroker.processors.heart_rate:HeartRate",
        "window_s": 5.0,
        "min_quality": 0.3,
    }
    pipeline = registry.pipeline([spec])
    assert isinstance(pipeline.processors[0], HeartRate)
    ctx = ProcessContext("s")
    outputs = [pipeline.run(f, ctx) for f in frames(PulsingFace(100.0), steady_times(7.5))]
    assert all(not r.errors for r in outputs)
    bpms = [r.outputs["heart_rate"]["heart_rate_bpm"] for r in outputs if r.outputs]
    assert len(bpms) == 3
    assert all(abs(b - 100.0) <= 3.0 for b in bpms)
    merged, errors = pipeline.end(ctx)
    assert errors == []
    assert merged["heart_rate"]["estimates"] == 3
    with pytest.raises(ProcessorLoadError, match="window_s must be a number in"):
        registry.build({"name": "framebroker.processors.heart_rate:HeartRate", "window_s": 1})
