"""The peer: CMU PocketSphinx (the ``pocketsphinx`` package and its bundled US-English model) restricted
by a JSGF grammar to the ten digit words, on the same audio as ours.

Per-utterance: each FSDD test take, resampled to 16 kHz (PocketSphinx's model rate) with soxr and given
300 ms of silence on each side (it decodes clipped-tight words worse without; that lifted it from 69% to
75% here). Decode time = ``start_utt`` .. ``hyp`` on in-memory 16-bit PCM, timed with perf_counter_ns.
Ours on the same takes: ``OnnxDigitClassifier.classify`` on the in-memory 8 kHz samples (window fitting,
onnxruntime, softmax). File reading and resampling are excluded for both.

Stream: the same labelled stream as the end-to-end benchmark, at 16 kHz, segmented by PocketSphinx's own
``Endpointer`` (its webrtc-style VAD) and decoded per segment; detections are matched to the words by the
same time-window rule as ours (:mod:`benchmarks.matching`), with the segment end as the event time.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import click
import numpy as np
import soxr

from benchmarks.audio import LabelledStream
from benchmarks.matching import Detection, WordTimes, match
from benchmarks.stats import summarize, wilson

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PEER_RATE = 16000
PAD_S = 0.3


def grammar(with_oh: bool = False) -> str:
    words = list(DIGIT_WORDS) + (["oh"] if with_oh else [])
    return "#JSGF V1.0;\ngrammar digits;\npublic <digit> = " + " | ".join(words) + ";\n"


def word_to_digit(hypstr: str | None) -> int | None:
    for word in (hypstr or "").split():
        if word in DIGIT_WORDS:
            return DIGIT_WORDS.index(word)
        if word == "oh":
            return 0
    return None


def make_decoder(with_oh: bool = False):
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=PEER_RATE, loglevel="FATAL", lm=None, jsgf=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decoder.add_jsgf_string("digits", grammar(with_oh))
    decoder.activate_search("digits")
    return decoder


def _pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def run_peer_utterances(clips: list[np.ndarray], digits: list[int], rate: int, classifier, *,
                        with_oh: bool = False, warmup: int = 5) -> dict[str, Any]:
    decoder = make_decoder(with_oh)
    pad = np.zeros(int(PAD_S * PEER_RATE), dtype=np.float32)
    peer_inputs = [_pcm16(np.concatenate([pad, soxr.resample(c, rate, PEER_RATE, quality="HQ"), pad]))
                   for c in clips]
    for pcm in peer_inputs[:warmup]:
        decoder.start_utt(); decoder.process_raw(pcm, full_utt=True); decoder.end_utt(); decoder.hyp()
    for c in clips[:warmup]:
        classifier.classify(c)
    peer_ms, ours_ms, peer_pred, ours_pred = [], [], [], []
    with click.progressbar(range(len(clips)), label="  pocketsphinx vs ours, per utterance",
                           file=click.get_text_stream("stderr")) as bar:
        for i in bar:
            t0 = time.perf_counter_ns()
            decoder.start_utt()
            decoder.process_raw(peer_inputs[i], full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            peer_ms.append((time.perf_counter_ns() - t0) / 1e6)
            peer_pred.append(word_to_digit(hyp.hypstr if hyp else None))
            t0 = time.perf_counter_ns()
            prediction = classifier.classify(clips[i])
            ours_ms.append((time.perf_counter_ns() - t0) / 1e6)
            ours_pred.append(prediction.digit)
    peer_ok = sum(1 for p, d in zip(peer_pred, digits) if p == d)
    ours_ok = sum(1 for p, d in zip(ours_pred, digits) if p == d)
    peer_t, ours_t = summarize(peer_ms), summarize(ours_ms)
    return {
        "files": len(clips),
        "pocketsphinx": {"accuracy": wilson(peer_ok, len(clips)), "decode_ms": peer_t,
                         "no_result": sum(1 for p in peer_pred if p is None)},
        "ours": {"accuracy": wilson(ours_ok, len(clips)), "decode_ms": ours_t},
        "speed_ratio_p50": peer_t["p50"] / ours_t["p50"],
        "speed_ratio_mean": peer_t["mean"] / ours_t["mean"],
        "accuracy_difference": (ours_ok - peer_ok) / len(clips),
        "pairwise": {"both_right": sum(1 for p, o, d in zip(peer_pred, ours_pred, digits) if p == d and o == d),
                     "only_ours_right": sum(1 for p, o, d in zip(peer_pred, ours_pred, digits) if p != d and o == d),
                     "only_peer_right": sum(1 for p, o, d in zip(peer_pred, ours_pred, digits) if p == d and o != d)},
        "samples_ms": {"pocketsphinx": [round(t, 4) for t in peer_ms], "ours": [round(t, 4) for t in ours_ms]},
    }


def run_peer_stream(stream: LabelledStream, *, with_oh: bool = False) -> dict[str, Any]:
    from pocketsphinx import Endpointer

    decoder = make_decoder(with_oh)
    endpointer = Endpointer(sample_rate=PEER_RATE)
    audio16 = soxr.resample(stream.audio, stream.rate, PEER_RATE, quality="HQ")
    pcm = _pcm16(audio16)
    frame = endpointer.frame_bytes
    detections: list[Detection] = []
    segment_ms: list[float] = []
    spent = 0
    n_frames = len(pcm) // frame
    with click.progressbar(range(n_frames), label="  pocketsphinx on the stream",
                           file=click.get_text_stream("stderr")) as bar:
        for i in bar:
            was_in_speech = endpointer.in_speech
            speech = endpointer.process(pcm[i * frame:(i + 1) * frame])
            if speech is None:
                continue
            t0 = time.perf_counter_ns()
            if not was_in_speech:
                decoder.start_utt()
                spent = 0
            decoder.process_raw(speech)
            if not endpointer.in_speech:
                decoder.end_utt()
                hyp = decoder.hyp()
                spent += time.perf_counter_ns() - t0
                segment_ms.append(spent / 1e6)
                digit = word_to_digit(hyp.hypstr if hyp else None)
                if digit is not None:
                    detections.append(Detection(digit, float(endpointer.speech_end)))
            else:
                spent += time.perf_counter_ns() - t0
    words = [WordTimes(u.digit, u.start / stream.rate, u.end / stream.rate) for u in stream.utterances]
    matched = match(words, detections)
    matched.pop("per_word")
    return {"segments": len(segment_ms), "segment_decode_ms": summarize(segment_ms), **matched,
            "latencies_ms": None,
            "note": "event time = PocketSphinx's own speech_end of the segment; latency is not compared"}
