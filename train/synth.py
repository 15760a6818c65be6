"""Synthetic spoken digits from Debian's espeak-ng and flite, cached on disk.

FSDD has six adult men. Formant synthesisers give cheap, labelled voices of other kinds (female,
child-like, fast, slow, high, low, other accents), which is what held-out-speaker accuracy needs.
Festival is deliberately not used here: it is kept as an unseen voice family for evaluation.

Clips are resampled to 8 kHz and trimmed of silence like FSDD, then stored in one ``.npz`` per
configuration hash under the cache directory, so a re-run costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from digitspot.edge.atomic_write import write_bytes_atomic
from digitspot.edge.audio_io import resample, to_mono_float32
from digitspot.edge.errors import UnavailableError
from digitspot.train.data import SAMPLE_RATE, ClipSet

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ESPEAK_LANGUAGES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                    "en-029", "en-us-nyc"]
ESPEAK_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt",
                   "klatt2", "klatt3", "klatt4", "Alex", "Andy", "adam", "anika", "belinda", "benjamin",
                   "david", "edward", "grandma", "grandpa", "iven", "linda", "max", "michel", "paul", "quincy",
                   "robert", "steph", "travis", "victor", "Annie", "Mike", "shelby"]
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]


@dataclass(frozen=True)
class SynthConfig:
    """How many synthetic voices to make; each voice says all ten digits once."""

    espeak_voices: int = 240
    flite_voices: int = 60
    seed: int = 1234
    version: int = 3  # bump when the generation code changes, to invalidate the cache

    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def trim_silence(samples: np.ndarray, rate: int, threshold_db: float = -35.0, pad_ms: float = 20.0) -> np.ndarray:
    """Cut leading/trailing frames quieter than ``threshold_db`` below the peak frame (FSDD is trimmed)."""
    frame = max(1, rate // 100)
    n = len(samples) // frame
    if n == 0:
        return samples
    energy = (samples[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12
    db = 10 * np.log10(energy / energy.max())
    active = np.flatnonzero(db > threshold_db)
    if active.size == 0:
        return samples
    pad = int(rate * pad_ms / 1000)
    start = max(0, active[0] * frame - pad)
    stop = min(len(samples), (active[-1] + 1) * frame + pad)
    return samples[start:stop]


def _decode(wav_bytes: bytes) -> tuple[np.ndarray, int]:
    data, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32", always_2d=False)
    return to_mono_float32(data), int(rate)


def _finish(samples: np.ndarray, rate: int, peak: float) -> np.ndarray:
    samples = resample(samples, rate, SAMPLE_RATE)
    samples = trim_silence(samples, SAMPLE_RATE)
    top = float(np.max(np.abs(samples))) or 1.0
    return (samples / top * peak).astype(np.float32)


def espeak_clip(word: str, voice: str, rate_wpm: int, pitch: int, pitch_range: int, peak: float) -> np.ndarray:
    # espeak-ng has no pitch-range flag; SSML prosody sets it (x-low..x-high) around the base pitch.
    ssml = f'<speak><prosody range="{pitch_range}%">{word}</prosody></speak>'
    cmd = ["espeak-ng", "-m", "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "--stdout", ssml]
    result = subprocess.run(cmd, capture_output=True, check=True, timeout=30)
    samples, rate = _decode(result.stdout)
    return _finish(samples, rate, peak)


def flite_clip(word: str, voice: str, f0_mean: float, stretch: float, peak: float, tmp: Path) -> np.ndarray:
    out = tmp / "flite.wav"
    cmd = ["flite", "-voice", voice, "--setf", f"int_f0_target_mean={f0_mean:.0f}",
           "--setf", f"duration_stretch={stretch:.2f}", "-t", word, "-o", str(out)]
    subprocess.run(cmd, capture_output=True, check=True, timeout=30)
    samples, rate = _decode(out.read_bytes())
    return _finish(samples, rate, peak)


def voice_plan(cfg: SynthConfig) -> list[dict]:
    """The list of voices (synthesiser settings), drawn reproducibly from ``cfg.seed``."""
    rng = np.random.default_rng(cfg.seed)
    plan = []
    for i in range(cfg.espeak_voices):
        lang = ESPEAK_LANGUAGES[i % len(ESPEAK_LANGUAGES)]
        variant = ESPEAK_VARIANTS[(i // len(ESPEAK_LANGUAGES) + i) % len(ESPEAK_VARIANTS)]
        plan.append({
            "engine": "espeak-ng",
            "voice": f"{lang}+{variant}" if variant else lang,
            "rate_wpm": int(rng.integers(110, 230)),
            "pitch": int(rng.integers(10, 95)),
            "pitch_range": int(rng.integers(50, 200)),
            "peak": float(rng.uniform(0.2, 0.9)),
        })
    for i in range(cfg.flite_voices):
        plan.append({
            "engine": "flite",
            "voice": FLITE_VOICES[i % len(FLITE_VOICES)],
            "f0_mean": float(rng.uniform(80, 260)),
            "stretch": float(rng.uniform(0.75, 1.4)),
            "peak": float(rng.uniform(0.2, 0.9)),
        })
    return plan


def check_synthesisers() -> None:
    missing = [tool for tool in ("espeak-ng", "flite") if shutil.which(tool) is None]
    if missing:
        raise UnavailableError(
            f"{' and '.join(missing)} not found: install the Debian packages (make sysdeps) or pass --no-synth"
        )


def generate(cfg: SynthConfig, cache_dir: str | Path, progress: bool = True) -> tuple[ClipSet, Path]:
    """Synthesise (or load from the cache) every voice x digit; returns the clips and the cache file."""
    from tqdm import tqdm

    cache_file = Path(cache_dir) / f"synth-{cfg.cache_key()}.npz"
    if cache_file.is_file():
        return load_cache(cache_file), cache_file
    check_synthesisers()
    plan = voice_plan(cfg)
    clips, labels, sources = [], [], []
    with tempfile.TemporaryDirectory(prefix="digitspot-synth-") as tmp:
        for vi, voice in enumerate(tqdm(plan, desc="synthetic voices", disable=not progress, leave=False)):
            for digit, word in enumerate(DIGIT_WORDS):
                try:
                    if voice["engine"] == "espeak-ng":
                        clip = espeak_clip(word, voice["voice"], voice["rate_wpm"], voice["pitch"],
                                           voice["pitch_range"], voice["peak"])
                    else:
                        clip = flite_clip(word, voice["voice"], voice["f0_mean"], voice["stretch"], voice["peak"],
                                          Path(tmp))
                except (subprocess.SubprocessError, OSError, RuntimeError):
                    continue  # an unknown espeak variant on this system: skip that voice/word
                if len(clip) < SAMPLE_RATE // 20:
                    continue
                clips.append(clip)
                labels.append(digit)
                sources.append(f"{voice['engine']}:{vi}:{voice['voice']}")
    expected = len(plan) * len(DIGIT_WORDS)
    if len(clips) < expected // 2:
        raise UnavailableError(
            f"only {len(clips)} of {expected} synthetic clips could be made: check espeak-ng/flite "
            f"(try `espeak-ng --stdout seven`) or pass --no-synth"
        )
    lengths = np.asarray([len(c) for c in clips], dtype=np.int64)
    buf = io.BytesIO()
    np.savez(buf, audio=np.concatenate(clips) if clips else np.zeros(0, np.float32), lengths=lengths,
             labels=np.asarray(labels, dtype=np.int64), sources=np.asarray(sources),
             config=json.dumps(asdict(cfg)), plan=json.dumps(plan))
    write_bytes_atomic(cache_file, buf.getvalue())
    return ClipSet(clips, labels, sources), cache_file


def load_cache(cache_file: Path) -> ClipSet:
    with np.load(cache_file) as npz:
        audio, lengths = npz["audio"], npz["lengths"]
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        clips = [audio[offsets[i]:offsets[i + 1]].astype(np.float32) for i in range(len(lengths))]
        return ClipSet(clips, [int(x) for x in npz["labels"]], [str(s) for s in npz["sources"]])
