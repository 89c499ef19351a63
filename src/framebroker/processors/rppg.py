"""Remote photoplethysmography maths: skin colour over time in, pulse rate out.

Pure functions on arrays, no frames or faces: the :class:`~.heart_rate.HeartRate` processor
measures the skin colour and calls these. The chain is

1. :func:`resample_uniform`: frames arrive at uneven times; filters and spectra need a fixed
   rate, so the colour series is linearly interpolated onto a uniform grid.
2. :func:`pos`: the plane-orthogonal-to-skin method of Wang, den Brinker, Stuijk and de Haan
   ("Algorithmic Principles of Remote PPG", IEEE TBME 64(7), 2017). Each short window of the
   R, G, B means is divided by its own mean (temporal normalisation: removes the skin tone and
   slow light changes), projected onto the plane orthogonal to the skin tone
   (``S1 = G - B``, ``S2 = G + B - 2R``: intensity changes, which are the same on every
   channel, vanish), and the two projections are combined as ``h = S1 + (σ(S1)/σ(S2))·S2``
   (alpha tuning: specular and motion distortions are in anti-phase in S1 and S2 and cancel,
   the pulse is in phase and adds up). Windows are overlap-added into one pulse signal.
3. :func:`bandpass`: zero-phase Butterworth band-pass over the band of plausible heart rates.
4. :func:`spectral_peak`: the strongest frequency of the band, refined between FFT bins,
   with a signal-quality value from the power around it and its first harmonic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import signal

__all__ = [
    "HR_BAND_HZ",
    "PulseEstimate",
    "bandpass",
    "estimate_pulse",
    "pos",
    "resample_uniform",
    "spectral_peak",
]

Array = NDArray[np.float64]

HR_BAND_HZ = (0.7, 4.0)
"""42 to 240 beats per minute: resting adults to athletes at their maximum."""

_PROJECTION = np.array([[0.0, 1.0, -1.0], [-2.0, 1.0, 1.0]])
"""POS's projection of normalised (R, G, B): rows give S1 = G - B and S2 = G + B - 2R."""

_TINY = 1e-12


@dataclass(frozen=True, slots=True)
class PulseEstimate:
    """A pulse rate read from one window of signal.

    ``bpm`` is the spectral peak in beats per minute. ``snr_db`` compares the power within
    ``halfwidth_hz`` of the peak and of its first harmonic with the rest of the band
    (de Haan and Jeanne's SNR, 2013); ``quality = s / (s + 1)`` with ``s`` that ratio, so it
    lies in [0, 1]: 0.1 to 0.45 for noise over a 10 s window (the peak is the highest of
    about 30 bins, so noise scores above its share of the band), 0.5 at 0 dB, above 0.8 for
    a clean pulse.
    """

    bpm: float
    quality: float
    snr_db: float


def resample_uniform(
    times: NDArray[np.float64], values: NDArray[np.float64], fs: float, duration: float
) -> Array:
    """``values`` (N, C) sampled at increasing ``times`` (N,), on a grid of ``fs`` Hz.

    The grid ends at ``times[-1]`` and reaches back ``duration`` seconds
    (``round(duration * fs)`` samples); points before ``times[0]`` take the first value.
    Linear interpolation: between frames the skin colour is unknown, and a straight line is
    the least-assuming guess that adds no frequencies of its own. Raises ``ValueError`` for
    shapes that do not match, fewer than two samples, or times that do not increase.
    """
    if times.ndim != 1 or values.ndim != 2 or len(times) != len(values):
        raise ValueError(
            f"expected times (N,) and values (N, C), got {times.shape} and {values.shape}"
        )
    if len(times) < 2:
        raise ValueError(f"need at least 2 samples to resample, got {len(times)}")
    if not (np.diff(times) > 0).all():
        raise ValueError("times must increase strictly")
    if not fs > 0 or not duration > 0:
        raise ValueError(f"fs and duration must be > 0, got fs={fs!r}, duration={duration!r}")
    n = max(2, round(duration * fs))
    grid = times[-1] - (n - 1 - np.arange(n, dtype=np.float64)) / fs
    out = np.empty((n, values.shape[1]), np.float64)
    for c in range(values.shape[1]):
        out[:, c] = np.interp(grid, times, values[:, c])
    return out


def pos(rgb: NDArray[np.float64], fs: float, window_s: float = 1.6) -> Array:
    """The POS pulse signal of ``rgb`` (N, 3) mean skin colours in R, G, B order at ``fs`` Hz.

    ``window_s`` is the length of the temporal normalisation (1.6 s in the paper: at least
    one cardiac cycle at 40 bpm, short enough to follow light changes). Returns (N,) floats,
    zero-mean per window, in units of relative colour change. A window whose colours do not
    vary (σ(S2) = 0) contributes S1 alone; a series shorter than a window is treated as one
    window. Raises ``ValueError`` for a shape other than (N, 3) or a non-positive mean.
    """
    if rgb.ndim != 2 or rgb.shape[1] != 3:
        raise ValueError(f"expected colours of shape (N, 3), got {rgb.shape}")
    n = len(rgb)
    if n == 0:
        return np.zeros(0, np.float64)
    length = max(2, min(n, math.ceil(window_s * fs)))
    windows = np.lib.stride_tricks.sliding_window_view(rgb, length, axis=0)  # (M, 3, L)
    means = windows.mean(axis=2, keepdims=True)
    if (means <= 0).any():
        raise ValueError("colour means must be > 0 for temporal normalisation")
    projected = np.einsum("pc,mcl->mpl", _PROJECTION, windows / means)  # (M, 2, L)
    s1, s2 = projected[:, 0, :], projected[:, 1, :]
    sd1, sd2 = s1.std(axis=1), s2.std(axis=1)
    alpha = np.where(sd2 > _TINY, sd1 / np.maximum(sd2, _TINY), 0.0)
    h = s1 + alpha[:, None] * s2
    h -= h.mean(axis=1, keepdims=True)
    out = np.zeros(n, np.float64)
    # Overlap-add: window m covers samples m .. m + length - 1; summing shifted rows is a
    # loop over the window length (tens of steps) rather than over the windows (hundreds).
    count = h.shape[0]
    for k in range(length):
        out[k : k + count] += h[:, k]
    return out


@lru_cache(maxsize=32)
def _butter(low_hz: float, high_hz: float, fs: float, order: int) -> Array:
    sos: Array = np.asarray(
        signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos"),
        dtype=np.float64,
    )
    return sos


def bandpass(
    x: NDArray[np.float64],
    fs: float,
    low_hz: float = HR_BAND_HZ[0],
    high_hz: float = HR_BAND_HZ[1],
    order: int = 3,
) -> Array:
    """``x`` filtered forwards and backwards by a Butterworth band-pass of ``order``.

    Zero-phase, so the pulse is not delayed against the window it is read in. Raises
    ``ValueError`` unless ``0 < low_hz < high_hz < fs / 2``, or for a signal too short for
    the filter's padding.
    """
    if not 0 < low_hz < high_hz < fs / 2:
        raise ValueError(
            f"expected 0 < low_hz < high_hz < fs / 2, got {low_hz!r}, {high_hz!r}, fs={fs!r}"
        )
    sos = _butter(float(low_hz), float(high_hz), float(fs), int(order))
    out: Array = np.asarray(signal.sosfiltfilt(sos, x), dtype=np.float64)
    return out


def spectral_peak(
    x: NDArray[np.float64],
    fs: float,
    low_hz: float = HR_BAND_HZ[0],
    high_hz: float = HR_BAND_HZ[1],
    *,
    pad_to: int = 4096,
    halfwidth_hz: float = 0.1,
) -> PulseEstimate | None:
    """The strongest frequency of ``x`` between ``low_hz`` and ``high_hz``, and its quality.

    The signal is Hann-windowed and zero-padded to at least ``pad_to`` points, and the peak
    is refined by a parabola through the log power of its bin and its neighbours: a 10 s
    window has bins 6 bpm apart, interpolation brings the error on a clean pulse well under
    1 bpm. Quality counts the power within ``halfwidth_hz`` of the peak and of twice its
    frequency (a pulse wave is not a sine: its harmonic carries pulse energy too) against
    the rest of the band; see :class:`PulseEstimate`. Returns ``None`` for a signal with no
    power in the band (a constant). Raises ``ValueError`` for fewer than 8 samples.
    """
    if x.ndim != 1 or len(x) < 8:
        raise ValueError(f"expected a 1-D signal of at least 8 samples, got shape {x.shape}")
    nfft = max(int(pad_to), 1 << math.ceil(math.log2(len(x))))
    spectrum = np.fft.rfft((x - x.mean()) * np.hanning(len(x)), n=nfft)
    power = spectrum.real**2 + spectrum.imag**2
    freqs = np.fft.rfftfreq(nfft, 1.0 / fs)
    band = (freqs >= low_hz) & (freqs <= high_hz)
    band_idx = np.flatnonzero(band)
    total = float(power[band].sum())
    if band_idx.size < 3 or total <= _TINY * max(float(power.max()), _TINY):
        return None
    k = int(band_idx[np.argmax(power[band])])
    peak_hz = float(freqs[k])
    if 0 < k < len(power) - 1:
        a, b, c = np.log(np.maximum(power[k - 1 : k + 2], _TINY))
        denom = a - 2 * b + c
        if denom < 0:  # a true maximum; a flat top leaves the bin as it is
            shift = 0.5 * (a - c) / denom
            peak_hz += float(np.clip(shift, -0.5, 0.5)) * float(freqs[1] - freqs[0])
    near = (np.abs(freqs - peak_hz) <= halfwidth_hz) | (np.abs(freqs - 2 * peak_hz) <= halfwidth_hz)
    signal_power = float(power[band & near].sum())
    noise_power = total - signal_power
    ratio = signal_power / max(noise_power, _TINY * total)
    return PulseEstimate(
        bpm=60.0 * peak_hz,
        quality=ratio / (ratio + 1.0),
        snr_db=10.0 * math.log10(max(ratio, 1e-12)),
    )


def estimate_pulse(
    rgb: NDArray[np.float64],
    fs: float,
    *,
    low_hz: float = HR_BAND_HZ[0],
    high_hz: float = HR_BAND_HZ[1],
    pos_window_s: float = 1.6,
    halfwidth_hz: float = 0.1,
) -> PulseEstimate | None:
    """POS, band-pass and spectral peak on ``rgb`` (N, 3) uniformly sampled at ``fs`` Hz.

    ``None`` when the band holds no power (a perfectly still colour). Raises ``ValueError``
    as the steps it chains do.
    """
    pulse = bandpass(pos(rgb, fs, pos_window_s), fs, low_hz, high_hz)
    return spectral_peak(pulse, fs, low_hz, high_hz, halfwidth_hz=halfwidth_hz)
