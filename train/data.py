"""FSDD on disk -> labelled clips in memory, and the two split protocols.

FSDD names its files ``{digit}_{speaker}_{take}.wav``. The official split tests on takes 0-4 of every
speaker, so it is speaker-dependent; ``speaker:<name>`` leaves one whole speaker out for testing and
is the honest measure of how the model does on a stranger. Validation (for early stopping) is always
carved from the training side: takes 45-49 of the training speakers, never a test file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitspot.edge.audio_io import load_audio
from digitspot.edge.devtools.fsdd import NAME_FORMAT, FsddTake, is_official_test_take
from digitspot.edge.errors import EXIT_DATAERR, EXIT_USAGE, DigitspotError, MissingInputError

SAMPLE_RATE = 8000
VALIDATION_TAKES = range(45, 50)


class DatasetError(DigitspotError):
    """The data directory holds something that is not FSDD (bad names, unreadable audio)."""

    exit_code = EXIT_DATAERR


class SplitError(DigitspotError):
    """A split name that does not exist (e.g. an unknown speaker in ``speaker:<name>``)."""

    exit_code = EXIT_USAGE


@dataclass
class ClipSet:
    """Clips of varying length (float32 at 8 kHz) with their labels and where they came from."""

    clips: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # file path or synthetic voice id

    def __len__(self) -> int:
        return len(self.clips)

    def extend(self, other: ClipSet) -> ClipSet:
        return ClipSet(self.clips + other.clips, self.labels + other.labels, self.sources + other.sources)

    def subset(self, indices) -> ClipSet:
        idx = list(indices)
        return ClipSet([self.clips[i] for i in idx], [self.labels[i] for i in idx], [self.sources[i] for i in idx])

    def label_array(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=np.int64)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """``--data-dir`` or ``$FSDD_DIR``; fails with one line if neither points at a directory."""
    if data_dir is None:
        data_dir = os.environ.get("FSDD_DIR")
    if not data_dir:
        raise MissingInputError("no FSDD directory given: pass --data-dir or set FSDD_DIR (or run `make data`)")
    path = Path(data_dir)
    if not path.is_dir():
        raise MissingInputError(f"FSDD directory {path} does not exist: pass --data-dir or run `make data`")
    return path


def scan_fsdd(data_dir: str | os.PathLike[str] | None) -> list[FsddTake]:
    """List the recordings; every ``.wav`` must follow FSDD's naming or the directory is rejected."""
    path = resolve_data_dir(data_dir)
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if not entries:
        raise MissingInputError(f"FSDD directory {path} is empty: expected {NAME_FORMAT} files")
    utterances: list[FsddTake] = []
    for p in entries:
        if p.is_dir():
            continue
        take = FsddTake.parse(p)
        if take is None:
            raise DatasetError(
                f"{p}: file name does not follow FSDD's {NAME_FORMAT} pattern; "
                "remove it or point --data-dir at the recordings directory"
            )
        utterances.append(take)
    if not utterances:
        raise MissingInputError(f"FSDD directory {path} holds no .wav recordings")
    return utterances


def check_readable(utterances: list[FsddTake], progress: bool = False) -> None:
    """Read every file's header (fast), so a non-audio file fails at the ``data`` stage, not mid-training."""
    import soundfile as sf
    from tqdm import tqdm

    for u in tqdm(utterances, desc="checking audio headers", disable=not progress, leave=False):
        try:
            info = sf.info(u.path)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DatasetError(f"{u.path}: not a readable audio file ({reason}); remove it from the data directory")
        if info.frames <= 0:
            raise DatasetError(f"{u.path}: audio file holds no samples; remove it from the data directory")


def speakers_of(utterances: list[FsddTake]) -> list[str]:
    return sorted({u.speaker for u in utterances})


@dataclass
class Split:
    """Which utterances train, validate and test a model."""

    name: str
    train: list[FsddTake]
    validation: list[FsddTake]
    test: list[FsddTake]

    def summary(self) -> dict:
        return {
            "split": self.name,
            "train_files": len(self.train),
            "validation_files": len(self.validation),
            "test_files": len(self.test),
            "train_speakers": speakers_of(self.train),
            "test_speakers": speakers_of(self.test),
        }


def make_split(utterances: list[FsddTake], name: str) -> Split:
    """``official`` (takes 0-4 test) or ``speaker:<name>`` (that speaker is the whole test set)."""
    if name == "official":
        test = [u for u in utterances if is_official_test_take(u.take)]
        rest = [u for u in utterances if not is_official_test_take(u.take)]
    elif name.startswith("speaker:"):
        speaker = name.split(":", 1)[1]
        known = speakers_of(utterances)
        if speaker not in known:
            raise SplitError(f"unknown speaker {speaker!r} in split {name!r}: choose one of {', '.join(known)}")
        test = [u for u in utterances if u.speaker == speaker]
        rest = [u for u in utterances if u.speaker != speaker]
    else:
        raise SplitError(f"unknown split {name!r}: use 'official' or 'speaker:<name>'")
    validation = [u for u in rest if u.take in VALIDATION_TAKES]
    train = [u for u in rest if u.take not in VALIDATION_TAKES]
    if not train or not test:
        raise DatasetError(f"split {name!r} leaves no training or no test files: is the FSDD directory complete?")
    return Split(name, train, validation, test)


def load_clips(utterances: list[FsddTake], progress: bool = True, desc: str = "loading audio") -> ClipSet:
    """Read each recording as mono float32 at 8 kHz (through the edge loader, as serving does)."""
    from tqdm import tqdm

    out = ClipSet()
    for u in tqdm(utterances, desc=desc, disable=not progress, leave=False):
        try:
            samples = load_audio(u.path, SAMPLE_RATE)
        except DigitspotError as exc:
            raise DatasetError(str(exc)) from exc
        out.clips.append(samples)
        out.labels.append(u.digit)
        out.sources.append(str(u.path))
    return out


def thin(utterances: list[FsddTake], per_digit_speaker: int) -> list[FsddTake]:
    """Keep the first ``per_digit_speaker`` takes of each digit/speaker (``--quick`` mode)."""
    counts: dict[tuple[int, str], int] = {}
    kept = []
    for u in sorted(utterances, key=lambda u: (u.speaker, u.digit, u.take)):
        key = (u.digit, u.speaker)
        if counts.get(key, 0) < per_digit_speaker:
            counts[key] = counts.get(key, 0) + 1
            kept.append(u)
    return kept
