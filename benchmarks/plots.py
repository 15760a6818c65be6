"""PNG figures for the report. matplotlib is optional (not an edge dependency): without it the report
says the figures were skipped and everything else is still written.

The confusion matrix is the training report's figure too, so it lives in ``digitspot.edge.devtools.plots``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitspot.edge.devtools.plots import pyplot


def latency_figure(path: Path, series: dict[str, list[float]], title: str, target_ms: float | None = None) -> bool:
    """Histogram (left) and empirical CDF (right) of one or more latency series, in ms."""
    plt = pyplot()
    series = {k: v for k, v in series.items() if v}
    if plt is None or not series:
        return False
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    for label, values in series.items():
        x = np.sort(np.asarray(values, dtype=float))
        hi = np.percentile(x, 99.5) if x.size > 20 else x.max()
        hist.hist(np.clip(x, None, hi), bins=60, alpha=0.55, label=f"{label} (n={x.size})")
        cdf.plot(x, np.arange(1, x.size + 1) / x.size, label=label)
    for ax in (hist, cdf):
        if target_ms is not None:
            ax.axvline(target_ms, color="red", linestyle="--", linewidth=1, label=f"target {target_ms:g} ms")
        ax.set_xlabel("latency (ms)")
        ax.grid(alpha=0.3)
    hist.set_ylabel("count")
    hist.set_title(f"{title}: histogram (clipped at p99.5)")
    cdf.set_ylabel("fraction <= x")
    cdf.set_title(f"{title}: CDF")
    if all(min(v) > 0 for v in series.values()):
        cdf.set_xscale("log")  # tails spread over decades; negative values (early events) need linear
    hist.legend(fontsize=8)
    cdf.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def accuracy_figure(path: Path, conditions: dict[str, Any]) -> bool:
    """Accuracy with 95% intervals per condition (clean, pitch, noise)."""
    plt = pyplot()
    if plt is None or not conditions:
        return False
    names = list(conditions)
    values = [conditions[n]["accuracy"]["value"] * 100 for n in names]
    lo = [v - conditions[n]["accuracy"]["ci95"][0] * 100 for v, n in zip(values, names)]
    hi = [conditions[n]["accuracy"]["ci95"][1] * 100 - v for v, n in zip(values, names)]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.bar(names, values, yerr=[lo, hi], capsize=3, color="#4c72b0")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("digitspot-edge classify accuracy, 95% Wilson intervals")
    ax.tick_params(axis="x", rotation=30)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
