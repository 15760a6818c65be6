"""Where the speech in a recording starts and stops: the one rule the benchmarks and training share.

FSDD files carry up to ~0.8 s of silence around a word. The benchmarks' streams measure latency from
"the last sample of the utterance", and the training strings place digits by their speech, so both cut
a take to the audio within ``floor_db`` of its loudest 10 ms frame. -35 dB keeps weak final consonants;
only runs of at least ``min_run`` loud frames count, so a click at the very end of a file (5_lucas_1.wav
has one) does not hold the end of speech back by the whole silence before it.
"""

from __future__ import annotations

import numpy as np


def speech_bounds(samples: np.ndarray, rate: int, floor_db: float = -35.0, frame_ms: int = 10,
                  min_run: int = 3) -> tuple[int, int]:
    """``(start, stop)`` sample indices of the speech; the whole clip if it is shorter than ``min_run`` frames."""
    x = np.asarray(samples, dtype=np.float64)
    hop = max(1, rate * frame_ms // 1000)
    n = x.size // hop
    if n < min_run:
        return 0, x.size
    energy = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12
    loud = np.append(10 * np.log10(energy / energy.max()) > floor_db, False)
    edges = np.flatnonzero(np.diff(np.concatenate([[False], loud]).astype(np.int8)))
    runs = list(zip(edges[0::2], edges[1::2]))  # [first, one past last) loud frame of each run
    kept = [r for r in runs if r[1] - r[0] >= min_run] or runs
    return int(kept[0][0] * hop), int(min(x.size, kept[-1][1] * hop))
