"""Rooms, voice shifts and FSDD strings: the measured effect of each transform, and the splits kept apart."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import solve_toeplitz
from scipy.signal import lfilter

from digitspot.edge.audio_io import load_audio
from digitspot.edge.devtools.speech_trim import speech_bounds
from digitspot.train import data as fsdd
from digitspot.train import fsdd_strings as strings
from digitspot.train import rooms
from digitspot.train import voice_shift as vs

RATE = 8000


@pytest.fixture(scope="module")
def utterances(fsdd_dir):
    return fsdd.scan_fsdd(fsdd_dir)


@pytest.fixture(scope="module")
def official(utterances):
    return fsdd.make_split(utterances, "official")


def _name(path: str) -> str:
    return Path(path).name


# -- rooms ---------------------------------------------------------------------------------------


def test_rt60_measurement_of_a_known_decay():
    """Schroeder/T30 on noise with an exact 0.5 s exponential decay reads 0.5 s (the ruler itself)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(0.8 * RATE)) / RATE
    rir = rng.standard_normal(t.size) * 10 ** (-3 * t / 0.5)  # amplitude -60 dB at 0.5 s
    assert rooms.measure_rt60(rir) == pytest.approx(0.5, rel=0.03)


@pytest.mark.parametrize("rt60, distance", [(0.3, 3.0), (0.6, 1.0)])
def test_simulated_room_rings_for_its_target_rt60(rt60, distance):
    """The kept RIR's T30 is within the bank's 5% tolerance, and a T20 fit of the same RIR agrees
    within 10% (a real exponential decay, not a fit that happens to land on the target)."""
    config = rooms.RoomBankConfig()
    spec = next(s for s in rooms.evaluation_room_specs(config) if s.rt60 == rt60 and s.distance == distance)
    response = rooms.simulate_room(spec, config)
    assert abs(response.rt60_measured / rt60 - 1) <= config.rt60_tolerance
    assert rooms.measure_rt60(response.rir, fit_db=(-5.0, -25.0)) == pytest.approx(rt60, rel=0.10)


def test_evaluation_rooms_are_disjoint_from_training_rooms():
    config = rooms.RoomBankConfig()
    train, held_out = rooms.training_room_specs(config), rooms.evaluation_room_specs(config)
    assert len(train) == config.train_rooms and len(held_out) == 3 * 2 * len(rooms.EVAL_GEOMETRIES) * 2
    assert not {s.seed for s in train} & {s.seed for s in held_out}
    closest = min(rooms.geometry_distance(t.dims, e.dims) for t in train for e in held_out)
    assert closest >= rooms.GEOMETRY_MARGIN_M - 1e-9
    # the grid the rooms benchmark reports, and training that spans the ranges
    assert {(s.rt60, s.distance) for s in held_out} == {(r, d) for r in (0.3, 0.6, 0.9) for d in (1.0, 3.0)}
    assert 0.2 <= min(s.rt60 for s in train) < 0.25 and 0.95 < max(s.rt60 for s in train) <= 1.0
    assert 0.5 <= min(s.distance for s in train) < 0.6 and 3.9 < max(s.distance for s in train) <= 4.0
    for s in train + held_out:  # every talker is where the spec says, inside the room
        assert math.dist(s.mic, s.talker) == pytest.approx(s.distance, abs=1e-3)
        assert all(0 < c < d for c, d in zip(s.talker, s.dims))


def test_bank_is_cached_and_reloads_identically(tmp_path):
    config = rooms.RoomBankConfig(train_rooms=2, train_rt60=(0.2, 0.3), eval_rt60=(0.3,), eval_distance=(1.0,),
                                  eval_geometries=rooms.EVAL_GEOMETRIES[:1], eval_positions=1)
    built = rooms.load_or_build_bank(tmp_path, config, progress=False)
    path = rooms.bank_path(tmp_path, config)
    assert path.is_file() and path.parent == tmp_path / "rirs"
    loaded = rooms.load_or_build_bank(tmp_path, config, progress=False)
    assert [r.spec for r in loaded.train + loaded.eval] == [r.spec for r in built.train + built.eval]
    for a, b in zip(built.train + built.eval, loaded.train + loaded.eval):
        assert np.array_equal(a.rir, b.rir) and a.rt60_measured == b.rt60_measured
    assert list(loaded.grid()) == [(0.3, 1.0)]
    assert rooms.bank_path(tmp_path, rooms.RoomBankConfig()) != path  # another config, another file


def test_active_level_ignores_silence():
    """P.56 active level of a 0.5-amplitude sine (power -9.03 dB): the onset is not yet "active", so
    -8.93 dB; padded with a second of silence either side, only the 200 ms hangover and the envelope's
    decay count as active (-10.10 dB), where a plain RMS would fall to -13.80 dB. Gain moves it 1:1."""
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)
    padded = np.concatenate([np.zeros(RATE), tone, np.zeros(RATE)])
    assert rooms.active_level_db(tone) == pytest.approx(-8.93, abs=0.01)
    assert rooms.active_level_db(padded) == pytest.approx(-10.10, abs=0.01)
    assert 10 * math.log10(np.mean(padded**2)) == pytest.approx(-13.80, abs=0.01)
    assert rooms.active_level_db(0.01 * padded) == pytest.approx(-50.10, abs=0.01)


def test_agc_restores_the_dry_level_and_reports_the_direct_path(fsdd_dir):
    dry = load_audio(fsdd_dir / "6_george_1.wav", RATE)
    config = rooms.RoomBankConfig()
    spec = next(s for s in rooms.evaluation_room_specs(config) if s.rt60 == 0.3 and s.distance == 3.0)
    room = rooms.simulate_room(spec, config)
    dry_level = rooms.active_level_db(dry)
    raw = room.apply(dry, agc=False)
    wet = room.apply(dry)
    assert abs(rooms.active_level_db(raw.samples) - dry_level) > 3.0  # the room did change the level
    assert rooms.active_level_db(wet.samples) == pytest.approx(dry_level, abs=0.5)
    assert wet.samples.size == dry.size + room.rir.size - 1
    # the direct sound arrives after the propagation delay, 3 m at 343 m/s plus the 40-sample filter
    assert wet.offset == pytest.approx(3.0 / 343.0 * RATE + 40, abs=rooms.DIRECT_SEARCH)
    # nothing of the word is heard before its direct sound (the RIR is causal)
    start, _ = speech_bounds(dry, RATE)
    wet_onset = int(np.flatnonzero(np.abs(wet.samples) > 0.01 * np.abs(wet.samples).max())[0])
    dry_onset = int(np.flatnonzero(np.abs(dry) > 0.01 * np.abs(dry).max())[0])
    assert wet_onset >= dry_onset + wet.offset - 10
    assert wet.wet_index(start) == start + wet.offset
    # a string in the same room: every digit's boundaries move by the same direct-path delay
    theo = strings.load_takes([u for u in fsdd.scan_fsdd(fsdd_dir) if u.speaker == "theo" and u.take == 0][:3])
    dry_string = strings.join(theo, [0.0, 100.0], lead_ms=100.0, tail_ms=100.0)
    wet_string = strings.in_room(dry_string, room)
    assert wet_string.starts == tuple(s + wet.offset for s in dry_string.starts)
    assert wet_string.ends == tuple(e + wet.offset for e in dry_string.ends)
    assert wet_string.samples.size == dry_string.samples.size + room.rir.size - 1


# -- voice shifts --------------------------------------------------------------------------------


def _vowel(f0: float = 120.0, seconds: float = 1.0) -> np.ndarray:
    """A pulse train (F0 with a 5% vibrato) through formant resonators at 600, 1200 and 2500 Hz."""
    n = int(seconds * RATE)
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 2 * np.arange(n) / RATE))
    x = np.diff(np.floor(np.cumsum(pitch / RATE)), prepend=0.0)
    for fc, bw in ((600, 80), (1200, 100), (2500, 150)):
        r = math.exp(-math.pi * bw / RATE)
        x = lfilter([1 - r], [1, -2 * r * math.cos(2 * math.pi * fc / RATE), r * r], x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _formants(x: np.ndarray, order: int = 10) -> np.ndarray:
    """Formant frequencies (Hz) from LPC roots of the middle half second."""
    s = x[x.size // 4: 3 * x.size // 4].astype(np.float64) * np.hamming(x.size // 2)
    s = np.append(s[0], s[1:] - 0.63 * s[:-1])
    r = np.correlate(s, s, "full")[s.size - 1: s.size + order]
    roots = np.roots(np.r_[1.0, solve_toeplitz(r[:order], -r[1: order + 1])])
    roots = roots[np.imag(roots) > 0]
    freqs = np.angle(roots) * RATE / (2 * np.pi)
    bandwidths = -np.log(np.abs(roots)) * RATE / np.pi
    return np.sort(freqs[(bandwidths < 400) & (freqs > 200)])


def test_child_like_raises_fsdd_pitch_by_a_quarter(official):
    """Over the 300 official test takes (six men), the mean F0 rises 25% +- 5% with the duration kept;
    take by take, the median rise is 25% +- 1% (autocorrelation jumps an octave on a few frames of a
    few takes, which moves the mean more than the median)."""
    before, after = [], []
    for u in sorted(official.test, key=lambda u: u.path):
        clip = load_audio(u.path, RATE)
        shifted = vs.child_like(clip)
        assert shifted.size == clip.size
        before.append(vs.mean_f0(clip))
        after.append(vs.mean_f0(shifted))
    before, after = np.asarray(before), np.asarray(after)
    assert np.nanmean(after) / np.nanmean(before) == pytest.approx(1.25, abs=0.05)
    assert np.nanmedian(after / before) == pytest.approx(1.25, abs=0.01)
    assert 120 < np.nanmean(before) < 140  # FSDD's adult men, as measured by the same ruler


def test_formant_and_pitch_move_independently():
    vowel = _vowel()
    base = _formants(vowel)
    assert vs.mean_f0(vowel) == pytest.approx(120.0, rel=0.01)
    assert base == pytest.approx([600, 1200, 2500], rel=0.05)
    warped = vs.warp_formants(vowel, 1.2)  # formants only
    assert vs.mean_f0(warped) == pytest.approx(120.0, rel=0.01)
    assert _formants(warped) == pytest.approx(base * 1.2, rel=0.05)
    voice = vs.shift_voice(vowel, formant=1.0, pitch=1.5)  # pitch only
    assert vs.mean_f0(voice) == pytest.approx(180.0, rel=0.01)
    assert _formants(voice) == pytest.approx(base, rel=0.05)
    child = vs.child_like(vowel)  # both, by 1.25
    assert vs.mean_f0(child) == pytest.approx(150.0, rel=0.01)
    assert _formants(child) == pytest.approx(base * 1.25, rel=0.05)
    assert vs.child_like(vowel, keep_duration=False).size == round(vowel.size / 1.25)


def test_random_voice_shift_is_deterministic_and_in_range():
    vowel = _vowel(seconds=0.5)
    a, shift_a = vs.random_voice_shift(vowel, np.random.default_rng(3))
    b, shift_b = vs.random_voice_shift(vowel, np.random.default_rng(3))
    assert shift_a == shift_b and np.array_equal(a, b)
    config = vs.VoiceShiftConfig()
    draws = [vs.draw_voice_shift(np.random.default_rng(i), config) for i in range(200)]
    assert all(config.formant_range[0] <= d.formant <= config.formant_range[1] for d in draws)
    assert all(config.pitch_range[0] <= d.pitch <= config.pitch_range[1] for d in draws)
    assert a.size == vowel.size and np.all(np.isfinite(a))


# -- FSDD strings --------------------------------------------------------------------------------


def test_training_strings_golden(official):
    """Labels, digit boundaries (samples) and gaps of a fixed draw, exactly."""
    chosen = [u for u in official.train if u.speaker in ("george", "lucas") and u.take in (5, 6)]
    builder = strings.StringBuilder(strings.load_takes(chosen))
    first, second, third = builder.draw_many(3, seed=123)
    assert first.speaker == "george" and first.digits == (5, 0, 9, 2, 2)
    assert first.starts == (1049, 7003, 12337, 18509, 21915)
    assert first.ends == (5129, 11963, 16417, 21629, 24635)
    assert first.gaps_ms == (234.25, 46.75, 261.5, 35.75)
    assert first.samples.size == 27273
    assert [_name(p) for p in first.sources] == ["5_george_6.wav", "0_george_6.wav", "9_george_5.wav",
                                                 "2_george_5.wav", "2_george_6.wav"]
    assert (second.digits, second.starts, second.ends) == ((5, 7), (442, 4556), (3562, 8876))
    assert (third.digits, third.starts, third.ends) == ((7,), (2151,), (7111,))
    # boundaries are where the audio is: silence before the first digit and between distant digits
    assert not np.any(first.samples[: first.starts[0]])
    assert not np.any(first.samples[first.ends[0]: first.starts[1]])
    assert np.any(first.samples[first.starts[0]: first.ends[0]])


def test_evaluation_strings_golden_and_exact_gaps(official):
    theo = strings.load_takes(u for u in official.test if u.speaker == "theo")
    sets = strings.evaluation_sets(theo)
    assert sorted(sets) == [0, 50, 100, 200]
    first = sets[50][0]
    assert first.digits == (3, 1, 9, 6, 4, 9)
    assert first.starts == (2400, 4720, 6640, 10080, 14240, 16640)
    assert first.ends == (4320, 6240, 9680, 13840, 16240, 18960)
    # every digit of a string at the same active level (one talker at one distance)
    levels = [rooms.active_level_db(first.samples[a:b]) for a, b in zip(first.starts, first.ends)]
    assert max(levels) - min(levels) < 0.3
    for gap, batch in sets.items():
        # the same takes in the same order at every gap; every take used at most once; 3-6 digits
        assert [s.sources for s in batch] == [s.sources for s in sets[0]]
        used = [p for s in batch for p in s.sources]
        assert len(used) == len(set(used)) and len(used) > 45
        assert all(3 <= len(s.digits) <= 6 for s in batch)
        for s in batch:
            assert all(s.starts[i + 1] - s.ends[i] == gap * RATE // 1000 for i in range(len(s.digits) - 1))


def test_held_out_speakers_and_takes_never_in_training_strings(utterances, official):
    train_takes = strings.load_takes(fsdd.thin(official.train, 4))
    drawn = strings.StringBuilder(train_takes).draw_many(300, seed=5)
    sources = {p for s in drawn for p in s.sources}
    assert len({s.speaker for s in drawn}) == 6
    test_paths = {u.path for u in official.test}
    assert sources and not sources & test_paths
    assert all(int(_name(p).rsplit("_", 1)[1][:-4]) >= 5 for p in sources)

    loso = fsdd.make_split(utterances, "speaker:george")
    drawn = strings.StringBuilder(strings.load_takes(fsdd.thin(loso.train, 2))).draw_many(200, seed=6)
    assert "george" not in {s.speaker for s in drawn}
    assert not any("_george_" in p for s in drawn for p in s.sources)
    held_out = strings.evaluation_strings(strings.load_takes(loso.test), 100)
    assert {s.speaker for s in held_out} == {"george"}
