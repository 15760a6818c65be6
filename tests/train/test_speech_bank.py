"""The speech bank: texts and labels, voices (reserved ones refused), held-out split, cache and resume.

The quick preset is synthesised for real (espeak-ng, flite, Kokoro and Piper joe) into a temporary
cache: first a run stopped after a few clips, then the rest, then a run that must find nothing to do.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from digitspot.train import corpus
from digitspot.train import speech_bank as sb
from digitspot.train.neural_voices import (
    KokoroBlend,
    ReservedVoiceError,
    kana_phonemes,
    misaki_phonemes,
    refuse_reserved,
)
from digitspot.train.voice_inventory import Engines, make_voice

F = corpus.FILLER
FIRST_STOP = 5
MANIFEST_FIELDS = {
    "id": str, "text": str, "english": str, "labels": list, "kind": str, "voice": str, "voice_family": str,
    "components": list, "sex": str, "reading": str, "rate": float, "prosody": dict, "split": str,
    "text_split": str, "voice_split": str, "homophone": bool, "file": str, "duration_s": float,
    "rms_dbfs": float, "raw_peak": float,
}


@pytest.fixture(scope="module")
def quick_bank(tmp_path_factory):
    """The quick preset built in three runs: stopped after FIRST_STOP clips, completed, repeated."""
    cache = tmp_path_factory.mktemp("bank")
    stopped = sb.build_speech_bank(cache, "quick", workers=1, progress=False, limit=FIRST_STOP)
    journal_after_stop = sb.read_journal(cache / sb.BANK_DIR)
    completed = sb.build_speech_bank(cache, "quick", workers=1, progress=False)
    repeated = sb.build_speech_bank(cache, "quick", workers=1, progress=False)
    return {"cache": cache, "stopped": stopped, "journal_after_stop": journal_after_stop,
            "completed": completed, "repeated": repeated}


# ------------------------------------------------------------------------------------------- texts


@pytest.mark.parametrize("text, labels", [
    ("seven", (7,)),
    ("oh", (0,)),
    ("oh seven nine, four one two", (0, 7, 9, 4, 1, 2)),
    ("the code is four two seven", (F, 4, 2, 7)),
    ("extension two zero five please", (F, 2, 0, 5, F)),
    ("four two seven is the code", (4, 2, 7, F)),
    ("please turn on the kitchen light", (F,)),
])
def test_labels_for_text(text, labels):
    assert corpus.labels_for(text) == labels


def test_digit_texts_and_oh():
    texts = corpus.digit_texts()
    assert [(t.text, t.labels, t.kind) for t in texts][-1] == ("oh", (0,), "oh")
    assert [t.labels[0] for t in texts[:10]] == list(range(10))
    assert all(t.text_split == "train" for t in texts)


def test_strings_are_distinct_deterministic_and_labelled_by_their_words():
    strings = corpus.string_texts(3000)
    assert len({t.text for t in strings}) == 3000
    assert [t.text for t in strings] == [t.text for t in corpus.string_texts(3000)]
    assert {len(t.labels) for t in strings} == {3, 4, 5, 6}
    assert any(" oh" in t.text or t.text.startswith("oh") for t in strings)
    for t in strings:
        assert corpus.labels_for(t.text) == t.labels, t.text
        assert len(t.kana.replace("、", " ").split()) == len(t.labels)


def test_negative_texts_say_no_digit():
    for kind_texts in (corpus.confusable_texts(), corpus.sentence_texts()):
        for t in kind_texts:
            assert t.labels == (F,)
    sentences = corpus.sentence_texts()
    banned = set(corpus.DIGIT_WORDS) | set(corpus.NUMBER_WORDS) | corpus.SENTENCE_BANNED
    assert not any(set(corpus.words_of(t.text)) & banned for t in sentences)
    homophones = {t.text for t in corpus.confusable_texts() if t.homophone}
    assert homophones == set(corpus.HOMOPHONES)


def test_wordlist_is_plain_words_without_digits_or_confusables():
    words = corpus.load_wordlist()
    assert len(words) > 20000
    assert all(re.fullmatch(r"[a-z]{3,10}", w) for w in words)
    assert not set(words) & (set(corpus.DIGIT_WORDS) | set(corpus.HOMOPHONES) | set(corpus.NUMBER_WORDS))
    assert "kitchen" in words and "seventy" not in words and "won" not in words


def test_mixed_sentences_carry_their_digits():
    mixed = corpus.mixed_texts(300)
    for t in mixed:
        assert corpus.labels_for(t.text) == t.labels
        assert F in t.labels and any(label >= 0 for label in t.labels)


def test_text_split_is_a_stable_hash():
    assert corpus.text_split_of("kitchen") == corpus.text_split_of("Kitchen!")
    share = np.mean([corpus.text_split_of(w) == "heldout" for w in corpus.load_wordlist()[:5000]])
    assert 0.12 < share < 0.18


# ---------------------------------------------------------------------------------------- phonemes


def test_espeak_ipa_maps_onto_misaki_us_and_gb():
    assert misaki_phonemes("seven") == "sˈɛvən"
    assert misaki_phonemes("zero oh four") == "zˈɪɹO ˈO fˈɔɹ"
    assert misaki_phonemes("zero oh four", british=True) == "zˈɪəɹQ ˈQ fˈɔː"
    assert misaki_phonemes("eight, nine.") == "ˈAt, nˈIn."
    assert kana_phonemes("セブン") == "sebɯɴ"
    assert kana_phonemes("フォー、ツー") == "ɸoː, ʦɨː"


# ------------------------------------------------------------------------------------------ voices


@pytest.mark.parametrize("style", ["jf_nezumi", "jf_tebukuro"])
def test_reserved_kokoro_styles_are_refused(style):
    with pytest.raises(ReservedVoiceError, match="reserved for independent evaluation"):
        KokoroBlend(((style, 1.0),))
    with pytest.raises(ReservedVoiceError):
        KokoroBlend((("jm_kumo", 0.5), (style, 0.5)))
    with pytest.raises(ReservedVoiceError):
        refuse_reserved(f"kokoro:jm_kumo50+{style}50")


def test_festival_is_refused():
    with pytest.raises(ReservedVoiceError):
        make_voice("festival", "kal_diphone")
    with pytest.raises(ReservedVoiceError):
        make_voice("espeak-ng", "festival")


def test_kokoro_engine_never_loads_reserved_styles():
    engines = Engines()
    engines.kokoro._load()
    assert set(engines.kokoro._styles) == {"jf_alpha", "jf_gongitsune", "jm_kumo"}


def test_full_plan_uses_only_allowed_voices_and_keeps_heldout_apart():
    plan = sb.plan_clips(sb.PRESETS["full"])
    assert len(plan) > 9000
    families = {s.voice.family for s in plan}
    assert families == {"espeak-ng", "flite", "kokoro", "piper"}
    for spec in plan:
        refuse_reserved(spec.voice.id)
    train = [s for s in plan if s.split == "train"]
    heldout = [s for s in plan if s.split == "heldout"]
    heldout_voices = {s.voice.id for s in plan if s.voice.split == "heldout"}
    assert heldout_voices and not heldout_voices & {s.voice.id for s in train}
    heldout_texts = {s.text.text for s in plan if s.text.text_split == "heldout"}
    assert heldout_texts and not heldout_texts & {s.text.text for s in train}
    assert {"flite:rms", "kokoro:jf_alpha60+jm_kumo40"} <= heldout_voices
    kinds = {s.text.kind for s in heldout}
    assert kinds == {"digit", "oh", "string", "word", "confusable", "sentence", "mixed"}
    assert len({s.id for s in plan}) == len(plan)
    assert [s.id for s in plan[:50]] == [s.id for s in sb.plan_clips(sb.PRESETS["full"])[:50]]


# ---------------------------------------------------------------------------------------- the bank


@pytest.mark.slow
def test_manifest_fields_and_audio(quick_bank):
    bank = quick_bank["completed"]
    plan = sb.plan_clips(sb.PRESETS["quick"])
    assert len(bank.records) == len(plan) and bank.failed == 0
    lines = (bank.root / "manifest-quick.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == bank.records
    for record in bank.records:
        for name, kind in MANIFEST_FIELDS.items():
            assert isinstance(record[name], kind), (name, record)
        assert record["kind"] in corpus.KINDS and record["voice_family"] in {"espeak-ng", "flite", "kokoro", "piper"}
        assert record["split"] in {"train", "heldout"}
        audio, rate = sf.read(bank.path(record), dtype="float32")
        assert rate == 8000 and audio.ndim == 1
        assert len(audio) == pytest.approx(record["duration_s"] * 8000, abs=1)
        assert 0.08 <= record["duration_s"] < 12
        assert -30 < record["rms_dbfs"] < -6  # stored at a -3 dBFS peak: speech, not silence or a square wave
        assert np.max(np.abs(audio)) == pytest.approx(10 ** (-3 / 20), abs=2e-3)
    assert {r["voice_family"] for r in bank.records} == {"espeak-ng", "flite", "kokoro", "piper"}


@pytest.mark.slow
def test_oh_is_zero_and_labels_match_the_words(quick_bank):
    records = quick_bank["completed"].records
    ohs = [r for r in records if r["kind"] == "oh"]
    assert ohs and all(r["labels"] == [0] and r["english"] == "oh" for r in ohs)
    for r in records:
        if r["kind"] in ("digit", "oh", "string", "mixed"):
            assert list(corpus.labels_for(r["english"])) == r["labels"], r
        if r["reading"] == "kana":
            assert r["text"] != r["english"] and not r["text"].isascii()
    strings = [r for r in records if r["kind"] == "string"]
    assert strings and all(3 <= len(r["labels"]) <= 6 and F not in r["labels"] for r in strings)


@pytest.mark.slow
def test_heldout_split_is_disjoint_from_train(quick_bank):
    records = quick_bank["completed"].records
    train = [r for r in records if r["split"] == "train"]
    heldout = [r for r in records if r["split"] == "heldout"]
    assert train and heldout
    assert not {r["voice"] for r in records if r["voice_split"] == "heldout"} & {r["voice"] for r in train}
    assert not {r["english"] for r in records if r["text_split"] == "heldout"} & {r["english"] for r in train}
    bank = quick_bank["completed"]
    assert bank.select(split="train") == train
    assert not any(r["voice"] == "flite:rms" for r in bank.select(split="train"))


@pytest.mark.slow
def test_a_stopped_run_keeps_its_clips_and_a_rerun_does_nothing(quick_bank):
    total = len(quick_bank["completed"].records)
    assert quick_bank["stopped"] is None
    assert len(quick_bank["journal_after_stop"]) == FIRST_STOP
    assert quick_bank["completed"].synthesized == total - FIRST_STOP
    repeated = quick_bank["repeated"]
    assert repeated.synthesized == 0 and repeated.failed == 0
    assert repeated.records == quick_bank["completed"].records
    assert sb.load_speech_bank(quick_bank["cache"], "quick").records == repeated.records


@pytest.mark.slow
def test_synthesis_is_deterministic(quick_bank, tmp_path):
    bank = quick_bank["completed"]
    plan = {s.id: s for s in sb.plan_clips(sb.PRESETS["quick"])}
    engines = Engines()
    for family in ("kokoro", "piper", "espeak-ng", "flite"):
        record = next(r for r in bank.records if r["voice_family"] == family)
        entry = sb.synthesize_clip(plan[record["id"]], tmp_path, engines)
        assert entry["duration_s"] == record["duration_s"]
        again, _ = sf.read(tmp_path / record["file"], dtype="float32")
        assert np.array_equal(again, bank.audio(record)), family


def test_load_without_a_manifest_says_how_to_build(tmp_path):
    with pytest.raises(sb.MissingInputError, match="python -m digitspot.train.speech_bank"):
        sb.load_speech_bank(tmp_path, "full")


def test_more_than_two_workers_is_refused(tmp_path):
    with pytest.raises(sb.SpeechBankError, match="workers"):
        sb.build_speech_bank(tmp_path, "quick", workers=3)
