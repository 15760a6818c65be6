"""Summaries with spread: percentiles, bootstrap intervals for them, Wilson intervals for rates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def summarize(values: Sequence[float], *, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """n, mean, std, min, p50/p90/p95/p99, max, IQR, and 95% bootstrap intervals of p50 and p95.

    The bootstrap resamples the measured values with replacement: it says how much a median or tail
    would move if the run were repeated on the same machine in the same state, not how another machine
    would do. Empty input gives ``{"n": 0}`` so a report can still be written.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0}
    out: dict[str, Any] = {
        "n": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
        "iqr": float(np.percentile(x, 75) - np.percentile(x, 25)),
    }
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(x, p))
    if bootstrap and x.size > 1:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, x.size, size=(bootstrap, x.size)) if x.size * bootstrap <= 5e7 else None
        if idx is not None:
            samples = x[idx]
            for p in (50, 95):
                q = np.percentile(samples, p, axis=1)
                out[f"p{p}_ci95"] = [float(np.percentile(q, 2.5)), float(np.percentile(q, 97.5))]
    return out


def median_of_block_medians(values: Sequence[float], block: int) -> dict[str, Any]:
    """The median of the medians of consecutive blocks of ``block`` values, with the blocks' spread.

    The inference runtimes take turns in blocks (``benchmarks.inference``), so a burst of load from
    elsewhere on the machine lands on whole blocks. A block's median ignores single slow calls, and the
    median over blocks ignores up to half the blocks being slowed, so this figure moves little between
    runs of one model where a per-call tail (p99) moves by tens of percent. A last, shorter block counts
    like the others; an empty input gives ``{"blocks": 0}``.
    """
    if block < 1:
        raise ValueError(f"block must be at least 1, not {block}")
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    medians = [float(np.median(x[i : i + block])) for i in range(0, x.size, block)]
    if not medians:
        return {"blocks": 0, "block_size": block}
    return {"value": float(np.median(medians)), "blocks": len(medians), "block_size": block,
            "min": min(medians), "max": max(medians), "block_medians": medians}


def wilson(successes: int, total: int, z: float = 1.96) -> dict[str, Any]:
    """A rate with its 95% Wilson score interval (sound at 0% and 100%, unlike the normal approximation)."""
    if total <= 0:
        return {"value": None, "successes": successes, "total": total, "ci95": [None, None]}
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return {"value": p, "successes": int(successes), "total": int(total),
            "ci95": [max(0.0, centre - half), min(1.0, centre + half)]}


def poisson_rate(events: int, exposure: float, z: float = 1.96) -> dict[str, Any]:
    """Events per unit of exposure (e.g. per hour) with an approximate 95% interval.

    Uses the exact chi-square style bounds through the Wilson-Hilferty approximation, so zero events
    still give a useful upper bound (~3.7 per exposure for 0 events).
    """
    if exposure <= 0:
        return {"value": None, "events": events, "exposure": exposure, "ci95": [None, None]}

    def chi2_quantile(p: float, k: float) -> float:
        # Wilson-Hilferty; accurate to a few percent, enough for an interval on a count
        from statistics import NormalDist
        zq = NormalDist().inv_cdf(p)
        return k * (1 - 2 / (9 * k) + zq * math.sqrt(2 / (9 * k))) ** 3

    lower = 0.0 if events == 0 else chi2_quantile(0.025, 2 * events) / 2
    upper = chi2_quantile(0.975, 2 * events + 2) / 2
    return {"value": events / exposure, "events": int(events), "exposure": exposure,
            "ci95": [lower / exposure, upper / exposure]}
