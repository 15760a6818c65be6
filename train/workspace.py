"""Where one run of the recipe reads and writes.

Layout of a run directory (``--run-dir``, e.g. ``runs/full-official``): ``recipe.json``, ``data.json``,
``synth.json``, ``teacher.pt``, ``student.pt``, ``pruned.pt`` (each checkpoint with its ``.json``: the
recipe and what the stage did), ``student-fp32.onnx`` (the unpruned student, measured for the report) and
``export.json``, ``quantize.json``, ``evaluate.json``. The shipped files go to ``--out`` (``artifacts/``):
``digitspot-fp32.onnx``, ``digitspot.onnx`` (INT8), ``digitspot.pt`` (TorchScript), each ``.onnx`` with its
``.onnx.json`` card, ``report.md`` and ``confusion-int8.png``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from digitspot.edge.atomic_write import write_json_atomic
from digitspot.train.recipe import Recipe

SHIPPED_NAME = "digitspot"
SHIPPED_FILES = (f"{SHIPPED_NAME}.onnx", f"{SHIPPED_NAME}.onnx.json", f"{SHIPPED_NAME}-fp32.onnx",
                 f"{SHIPPED_NAME}-fp32.onnx.json", f"{SHIPPED_NAME}.pt", "report.md", "confusion-int8.png")


@dataclass
class Workspace:
    """The recipe and the directories one run uses; every stage takes one."""

    recipe: Recipe
    run_dir: Path
    out_dir: Path
    data_dir: str | None
    cache_dir: Path
    progress: bool = True

    def path(self, name: str) -> Path:
        """A file of the run directory (checkpoints, stage configs)."""
        return self.run_dir / name

    def artifact(self, name: str) -> Path:
        """A shipped file (models, cards, report)."""
        return self.out_dir / name

    @staticmethod
    def command() -> str:
        """The command line that is running, as recorded beside each output."""
        return " ".join(["digitspot-train"] + sys.argv[1:])

    def save_config(self, output: Path, stage: str, extra: dict) -> None:
        """``<output>.json`` beside each stage's output: recipe + what the stage did."""
        write_json_atomic(Path(str(output) + ".json") if output.suffix != ".json" else output, {
            "stage": stage, "command": self.command(),
            "run_dir": str(self.run_dir), "data_dir": self.data_dir, "recipe": self.recipe.to_dict(), **extra,
        })

    def make_shipped_readable(self) -> None:
        """Mode 0644 on the shipped files whatever the umask: the daemon's user must read models and cards."""
        for name in SHIPPED_FILES:
            path = self.artifact(name)
            if path.is_file():
                os.chmod(path, 0o644)
