"""Our ByteTrack against the reference implementation's own output on MOT sequences.

A row is equal when the reference has a row in the same frame with the box within 0.1 px,
and the ids agree under the best one-to-one renaming of ours onto theirs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from framebroker.processors.bytetrack import ByteTrackConfig
from framebroker.processors.bytetrack.mot import load_sequence, track_sequence

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mot"
SEQUENCES = sorted(p.name for p in DATA.iterdir()) if DATA.is_dir() else []


def config_for(name: str, kind: str, frame_rate: float) -> ByteTrackConfig:
    if kind == "demo":
        return ByteTrackConfig(0.5, 0.8, 30, frame_rate)
    return ByteTrackConfig(0.6, 0.9, 14 if name == "MOT17-05-FRCNN" else 30, 30.0)


def eval_filter(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    w, h = rows[:, 4], rows[:, 5]
    return rows[~((w * h <= 100) | (w / h > 1.6))]


def agreement(ours: NDArray[np.float64], ref: NDArray[np.float64]) -> float:
    pairs: list[tuple[int, int]] = []
    for fid in np.union1d(ours[:, 0], ref[:, 0]):
        a = ours[ours[:, 0] == fid]
        b = ref[ref[:, 0] == fid]
        if not len(a) or not len(b):
            continue
        close = (np.abs(a[:, None, 2:6] - b[None, :, 2:6]) <= 0.1 + 1e-9).all(axis=2)
        ia, ib = np.nonzero(close)
        used_a: set[int] = set()
        used_b: set[int] = set()
        for i, j in zip(ia.tolist(), ib.tolist(), strict=True):
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                pairs.append((int(a[i, 1]), int(b[j, 1])))
    if not pairs:
        return 0.0
    ours_ids = sorted({p[0] for p in pairs})
    ref_ids = sorted({p[1] for p in pairs})
    index_a = {v: k for k, v in enumerate(ours_ids)}
    index_b = {v: k for k, v in enumerate(ref_ids)}
    counts = np.zeros((len(ours_ids), len(ref_ids)))
    for x, y in pairs:
        counts[index_a[x], index_b[y]] += 1
    r, c = linear_sum_assignment(-counts)
    equal = counts[r, c].sum()
    return float(equal / max(len(ours), len(ref)))


@pytest.mark.skipif(not SEQUENCES, reason=f"MOT test data not found at {DATA}")
@pytest.mark.parametrize("kind", ["demo", "eval"])
@pytest.mark.parametrize("name", SEQUENCES)
def test_rows_match_the_reference(name: str, kind: str) -> None:
    seq = load_sequence(DATA / name)
    ours = track_sequence(seq, config_for(name, kind, seq.frame_rate))
    if kind == "eval":
        ours = eval_filter(ours)
    ref = np.loadtxt(DATA / name / "ref_bytetrack" / f"{kind}.txt", delimiter=",", ndmin=2)
    rate = agreement(ours, ref)
    assert rate >= 0.99, f"{name} {kind}: {rate:.4%} of rows agree ({len(ours)} vs {len(ref)})"
