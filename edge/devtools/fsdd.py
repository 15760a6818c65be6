"""The Free Spoken Digit Dataset's file names, parsed in one place.

FSDD names every recording ``{digit}_{speaker}_{take}.wav`` (``7_george_0.wav``: george's first take of
"seven"). Its official split tests on takes 0-4 of every speaker and trains on the rest. Training,
the benchmarks, the tests and the ARM check all read those names; they read them through this module,
which imports only the standard library so that each of them (and a Pi without torch) may use it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PATTERN = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
NAME_FORMAT = "{digit}_{speaker}_{take}.wav"
OFFICIAL_TEST_TAKES = range(5)  # takes 0-4 of every speaker: FSDD's own train/test split


@dataclass(frozen=True)
class FsddTake:
    """One FSDD recording: the spoken digit, who said it, which take, and where the file is."""

    digit: int
    speaker: str
    take: int
    path: Path

    @classmethod
    def parse(cls, path: str | os.PathLike[str]) -> FsddTake | None:
        """The take named by ``path``'s file name, or None when the name does not follow FSDD's pattern."""
        path = Path(path)
        m = PATTERN.match(path.name)
        if m is None:
            return None
        return cls(int(m.group(1)), m.group(2), int(m.group(3)), path)

    @property
    def is_official_test(self) -> bool:
        """True for takes 0-4, the official test split."""
        return is_official_test_take(self.take)


def is_official_test_take(take: int) -> bool:
    return take in OFFICIAL_TEST_TAKES


def digit_of(path: str | os.PathLike[str]) -> int:
    """The spoken digit of an FSDD file; ``ValueError`` naming the file when its name is not FSDD's."""
    take = FsddTake.parse(path)
    if take is None:
        raise ValueError(f"{path}: not an FSDD file name ({NAME_FORMAT})")
    return take.digit


def list_takes(folder: str | os.PathLike[str], official_test_only: bool = False) -> list[FsddTake]:
    """Every ``.wav`` directly in ``folder`` whose name follows FSDD's pattern, sorted by file name.

    Other files are left out; a caller that must reject them (training does) compares with the listing.
    """
    takes = (FsddTake.parse(p) for p in sorted(Path(folder).glob("*.wav")))
    return [t for t in takes if t is not None and (t.is_official_test or not official_test_only)]
