"""Figures shared by the training report and the benchmark report, so the two read alike.

matplotlib is not an edge dependency (a Pi runs without it): it is imported inside the functions, and
each figure function returns False, writing nothing, when it is missing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from digitspot.edge.atomic_write import write_bytes_atomic


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def confusion_figure(path: Path, matrix: Any, title: str) -> bool:
    """A 10x10 confusion matrix (rows spoken, columns predicted) as a PNG at ``path``; False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    import numpy as np

    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(m, cmap="Blues")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("spoken digit")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())  # a report never links half a PNG
    return True
