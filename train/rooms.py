"""Simulated rooms: a bank of room impulse responses (RIRs) at 8 kHz, and an AGC-like way to apply one.

A sensor on a kitchen shelf hears the talker through the room: the direct sound, then reflections that
keep arriving for the room's reverberation time (RT60, the time the energy takes to fall by 60 dB;
0.3-0.6 s in living rooms, up to 0.9 s in tiled kitchens and halls). Training sees rooms at RT60
0.2-1.0 s with the talker 0.5-4 m from the microphone; the measurement sees *other* rooms.

Why the rooms are made this way:

- Shoebox rooms by the image-source method (pyroomacoustics), with the randomised variant (every image
  source jittered by up to 5 cm) so that a shoebox does not ring with the regular "sweeping" echoes
  of an ideal one. The walls' absorption is found by simulating, measuring the RT60 (Schroeder backward
  integration, the T30 fit) and correcting: Sabine's formula alone gives rooms that ring about 25%
  longer than asked in this simulator.
- Training and evaluation rooms never share a geometry nor a seed. Evaluation rooms are a fixed list
  of geometries (``EVAL_GEOMETRIES``); a training draw whose length, width and height all lie within
  ``GEOMETRY_MARGIN_M`` of one of them is drawn again. Training seeds count from 0, evaluation seeds
  from ``EVAL_SEED_BASE``.
- The evaluation grid is what the rooms benchmark reports: RT60 0.3 / 0.6 / 0.9 s at 1 m and 3 m,
  several rooms per cell so that no single RIR decides a figure.
- ``apply_rir`` sets the reverberant clip back to the dry clip's active speech level (ITU-T P.56), as
  the AGC of a real capture chain would, and says where the dry signal lies in the wet one (the
  direct-path delay): the rooms benchmark measures latency from the end of the dry word.

The bank is slow to make (seconds per reverberant room on one core), so it is cached as one ``.npz``
whose name carries a hash of everything that shapes it. pyroomacoustics is imported only to make the
bank; reading a cached bank and applying RIRs need numpy and scipy alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import butter, fftconvolve, lfilter, sosfilt

SAMPLE_RATE = 8000
SPEED_OF_SOUND = 343.0  # m/s, the value pyroomacoustics uses
FRAC_DELAY_TAPS = 81  # pyroomacoustics' fractional-delay filter: every arrival is late by 81 // 2 samples
# Every image source adds a positive pulse, so a simulated RIR carries a large sub-audio (DC) part that
# would steer the RT60 fit. The simulator's own high-pass is zero-phase and smears that part to before
# the direct sound; a causal high-pass below speech keeps the RIR causal.
RIR_HIGHPASS_HZ = 50.0
DIRECT_SEARCH = 3  # samples either side of the geometric direct-path arrival where its peak is sought
DEFAULT_CACHE_DIR = Path("cache")  # as ``digitspot-train --cache-dir``; the bank lives in its rirs/ folder

# Evaluation geometries (length, width, height in m): ordinary living rooms and kitchens.
EVAL_GEOMETRIES: tuple[tuple[float, float, float], ...] = (
    (4.4, 3.3, 2.5),
    (5.3, 4.2, 2.7),
    (6.2, 3.6, 2.6),
    (6.9, 4.8, 3.0),
)
GEOMETRY_MARGIN_M = 0.3  # a training room differs from every evaluation room by >= this in some dimension
EVAL_SEED_BASE = 1_000_000  # training seeds are 0 .. train_rooms - 1, always below this

# Where people and sensors are in a room (m).
WALL_CLEARANCE_M = 0.3  # the talker stands at least this far from every wall
MIC_WALL_OFFSET_M = (0.15, 0.6)  # a shelf or a wall mount: the microphone is this far from one wall
MIC_HEIGHT_M = (0.8, 2.0)
TALKER_HEIGHT_M = (1.0, 1.8)  # mouth height, sitting child to standing adult

# RT60 fit range on the Schroeder curve (T30: -5 to -35 dB, extrapolated to 60 dB).
T30_FIT_DB = (-5.0, -35.0)
# Image-source order, as a fraction of the path length sound travels in one target RT60, for the passes that
# correct the absorption (enough for the T30 fit) and for the RIR that is kept (tail ~50 dB down).
CALIBRATION_ORDER = 0.6
FINAL_ORDER = 0.85
FINAL_PASSES = 5  # simulations at the final order when its longer tail moves the RT60 out of tolerance
MAX_ABSORPTION = 0.99
SABINE_CORRECTION = 1.25  # first guess: this simulator rings ~25% longer than Sabine's formula predicts

# ITU-T P.56 method B constants.
P56_TIME_CONSTANT_S = 0.03
P56_HANGOVER_S = 0.2
P56_MARGIN_DB = 15.9
# The recommendation's thresholds are an octave (6 dB) apart, which makes the level move with a gain
# only to within ~0.5 dB; thresholds every 0.5 dB (counted with one sort) make it follow a gain exactly.
P56_STEP_DB = 0.5
P56_FLOOR_DB = -100.0


class RoomBankError(RuntimeError):
    """A room that cannot be built (a talker distance that does not fit, a cache that does not load)."""


# -- measuring -----------------------------------------------------------------------------------


def schroeder_decay_db(rir: np.ndarray) -> np.ndarray:
    """Energy decay curve (Schroeder backward integration), dB relative to the total energy."""
    energy = np.asarray(rir, dtype=np.float64) ** 2
    remaining = np.cumsum(energy[::-1])[::-1]
    total = remaining[0] if remaining.size and remaining[0] > 0 else 1.0
    return 10.0 * np.log10(remaining / total + 1e-300)


def measure_rt60(rir: np.ndarray, rate: int = SAMPLE_RATE, fit_db: tuple[float, float] = T30_FIT_DB) -> float:
    """RT60 in seconds: a straight line fitted to the Schroeder curve between ``fit_db`` (T30 by
    default), extrapolated to a 60 dB decay. ``nan`` when the curve never falls through the range."""
    decay = schroeder_decay_db(rir)
    hi, lo = fit_db
    below_hi = np.flatnonzero(decay <= hi)
    below_lo = np.flatnonzero(decay <= lo)
    if below_hi.size == 0 or below_lo.size == 0 or below_lo[0] - below_hi[0] < 4:
        return float("nan")
    i0, i1 = int(below_hi[0]), int(below_lo[0])
    t = np.arange(i0, i1) / rate
    slope = np.polyfit(t, decay[i0:i1], 1)[0]  # dB per second, negative
    return float(-60.0 / slope) if slope < 0 else float("nan")


def active_level_db(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Active speech level in dB relative to a full-scale (1.0) square wave, ITU-T P.56 method B.

    The level of the speech while it is active: an envelope (two 30 ms one-pole smoothers of |x|)
    with 200 ms hangover is compared with a ladder of thresholds (0.5 dB apart here, an octave in the
    recommendation), and the level is the mean power over the samples above the threshold that sits
    15.9 dB below it. Silence padding and pauses do not
    pull it down, which is why an AGC (and this module) can compare a dry take with its reverberant copy.
    ``-inf`` for all-zero input.
    """
    x = np.asarray(samples, dtype=np.float64)
    power_sum = float(np.sum(x * x))
    if x.size == 0 or power_sum == 0.0:
        return float("-inf")
    g = math.exp(-1.0 / (rate * P56_TIME_CONSTANT_S))
    envelope = lfilter([1 - g], [1, -g], lfilter([1 - g], [1, -g], np.abs(x)))
    hang = math.ceil(rate * P56_HANGOVER_S)
    size = hang + 1  # active while the envelope was above the threshold within the last ``hang`` samples
    held = maximum_filter1d(envelope, size=size, origin=(size - 1) // 2, mode="constant", cval=0.0)
    threshold_db = np.arange(P56_FLOOR_DB, P56_STEP_DB / 2, P56_STEP_DB)
    ordered = np.sort(held)
    counts = held.size - np.searchsorted(ordered, 10 ** (threshold_db / 20), side="left")
    keep = counts > 0
    if not np.any(keep):
        return 10 * math.log10(power_sum / x.size)
    threshold_db, counts = threshold_db[keep], counts[keep]
    active_db = 10 * np.log10(power_sum / counts)
    excess = active_db - threshold_db - P56_MARGIN_DB  # falls as the threshold rises
    crossing = np.flatnonzero(excess <= 0)
    if crossing.size == 0:
        return float(active_db[-1])
    j = int(crossing[0])
    if j == 0:
        return float(active_db[0])
    t = excess[j - 1] / (excess[j - 1] - excess[j])
    return float(active_db[j - 1] + t * (active_db[j] - active_db[j - 1]))


# -- applying ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reverberated:
    """A clip as the microphone hears it in a room.

    ``offset``: dry sample ``i`` arrives (by the direct path) at sample ``i + offset`` of ``samples``;
    the end of the dry word is therefore at ``dry_end + offset``. ``gain_db`` is what the AGC applied.
    """

    samples: np.ndarray
    offset: int
    gain_db: float

    def wet_index(self, dry_index: int) -> int:
        return dry_index + self.offset


def match_active_level(samples: np.ndarray, target_db: float, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """Scale ``samples`` so that its active level is ``target_db``; returns the clip and the gain (dB).

    The envelope is compared with fixed thresholds, so a gain moves the measured level by the gain
    only up to the threshold grid's interpolation error: a second pass removes the remainder.
    """
    out = np.asarray(samples, dtype=np.float64)
    total = 0.0
    for _ in range(2):
        level = active_level_db(out, rate)
        if not math.isfinite(level):
            break
        step = target_db - level
        out = out * 10 ** (step / 20)
        total += step
    return out.astype(np.float32), total


def apply_rir(dry: np.ndarray, rir: np.ndarray, direct_delay: float, *, agc: bool = True,
              rate: int = SAMPLE_RATE) -> Reverberated:
    """Convolve ``dry`` with ``rir`` (the full reverberant tail is kept: the wet clip is
    ``len(dry) + len(rir) - 1`` samples) and, with ``agc``, bring the wet clip back to the dry clip's
    active speech level. ``direct_delay`` (samples, from the RIR's metadata) becomes ``offset``."""
    dry64 = np.asarray(dry, dtype=np.float64)
    wet = fftconvolve(dry64, np.asarray(rir, dtype=np.float64))
    gain_db = 0.0
    if agc:
        target = active_level_db(dry64, rate)
        if math.isfinite(target):
            wet, gain_db = match_active_level(wet, target, rate)
    return Reverberated(np.clip(wet, -1.0, 1.0).astype(np.float32), round(direct_delay), float(gain_db))


# -- rooms ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomSpec:
    """Everything that determines one RIR: the room, where the microphone and talker are, the target RT60.

    ``split`` is "train" or "eval"; ``seed`` seeds the draw of the room and positions and the
    randomised image sources.
    Coordinates are metres from one corner of the floor.
    """

    split: str
    seed: int
    dims: tuple[float, float, float]
    rt60: float  # target, s
    distance: float  # talker to microphone, m
    mic: tuple[float, float, float]
    talker: tuple[float, float, float]

    @property
    def nominal_delay(self) -> float:
        """Samples from the talker's mouth to the direct sound in the RIR by geometry (propagation +
        the simulator's fractional-delay filter); the randomised image sources move the direct source
        too, by up to ~2 samples, so ``RoomResponse.direct_delay`` reads the actual peak."""
        return self.distance / SPEED_OF_SOUND * SAMPLE_RATE + FRAC_DELAY_TAPS // 2


@dataclass(frozen=True)
class RoomResponse:
    """One simulated RIR (float32, 8 kHz, starting at the talker's first sample) and what it measured."""

    spec: RoomSpec
    rir: np.ndarray
    rt60_measured: float  # s, T30 on the Schroeder curve
    absorption: float  # energy absorption coefficient of every wall

    @property
    def direct_delay(self) -> int:
        """Where the direct sound peaks in ``rir`` (samples): the strongest sample within
        ``DIRECT_SEARCH`` (0.4 ms) of the geometric arrival, which covers the randomised image
        sources' jitter (at most 5 cm per axis, ~2 samples). A grazing reflection off the wall behind
        the microphone can land inside that window too; it is then part of the onset either way."""
        nominal = round(self.spec.nominal_delay)
        lo = max(0, nominal - DIRECT_SEARCH)
        return lo + int(np.argmax(np.abs(self.rir[lo: nominal + DIRECT_SEARCH + 1])))

    def apply(self, dry: np.ndarray, *, agc: bool = True) -> Reverberated:
        return apply_rir(dry, self.rir, self.direct_delay, agc=agc)


def _canonical(dims) -> tuple[float, float, float]:
    """(length, width, height) with length >= width, so a room and its mirror compare equal."""
    a, b, h = (float(v) for v in dims)
    return (max(a, b), min(a, b), h)


def geometry_distance(a, b) -> float:
    """Largest difference in any dimension (m) between two rooms, ignoring which floor side is which."""
    return max(abs(x - y) for x, y in zip(_canonical(a), _canonical(b)))


def _place(dims: tuple[float, float, float], distance: float, rng: np.random.Generator,
           tries: int = 2000) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """A microphone near one wall and a talker ``distance`` m from it, inside the room."""
    length, width, height = dims
    for _ in range(tries):
        wall = int(rng.integers(4))
        off = rng.uniform(*MIC_WALL_OFFSET_M)
        mz = rng.uniform(*MIC_HEIGHT_M)
        tz = rng.uniform(*TALKER_HEIGHT_M)
        if abs(tz - mz) >= distance or max(mz, tz) > height - 0.2:
            continue
        if wall == 0:
            mic = (off, rng.uniform(0.3, width - 0.3), mz)
        elif wall == 1:
            mic = (length - off, rng.uniform(0.3, width - 0.3), mz)
        elif wall == 2:
            mic = (rng.uniform(0.3, length - 0.3), off, mz)
        else:
            mic = (rng.uniform(0.3, length - 0.3), width - off, mz)
        horizontal = math.sqrt(distance**2 - (tz - mz) ** 2)
        angle = rng.uniform(0.0, 2 * math.pi)
        tx, ty = mic[0] + horizontal * math.cos(angle), mic[1] + horizontal * math.sin(angle)
        c = WALL_CLEARANCE_M
        if c <= tx <= length - c and c <= ty <= width - c:
            return tuple(round(v, 4) for v in mic), (round(tx, 4), round(ty, 4), round(tz, 4))
    raise RoomBankError(f"no talker position {distance} m from a wall microphone fits in a {dims} m room")


@dataclass(frozen=True)
class RoomBankConfig:
    """What the bank holds; its hash names the cache file, so any change makes a new bank."""

    train_rooms: int = 400
    train_rt60: tuple[float, float] = (0.2, 1.0)  # s, uniform
    train_distance: tuple[float, float] = (0.5, 4.0)  # m, uniform
    train_length: tuple[float, float] = (3.0, 9.0)  # m
    train_width: tuple[float, float] = (2.5, 7.0)  # m (drawn <= length)
    train_height: tuple[float, float] = (2.3, 3.6)  # m
    eval_rt60: tuple[float, ...] = (0.3, 0.6, 0.9)
    eval_distance: tuple[float, ...] = (1.0, 3.0)
    eval_geometries: tuple[tuple[float, float, float], ...] = EVAL_GEOMETRIES
    eval_positions: int = 2  # talker/microphone placements per geometry and grid cell
    rt60_tolerance: float = 0.05  # relative; absorption is corrected until the measured RT60 is this close
    max_rand_disp: float = 0.05  # m, randomised image-source jitter
    version: int = 3  # the generation code's version: bump it when the code changes what it makes

    def cache_key(self) -> str:
        try:
            from importlib.metadata import version
            simulator = version("pyroomacoustics")
        except Exception:  # noqa: BLE001 - metadata missing only in odd installs; the key still names the config
            simulator = "unknown"
        blob = json.dumps({**asdict(self), "pyroomacoustics": simulator}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def training_room_specs(config: RoomBankConfig = RoomBankConfig()) -> list[RoomSpec]:
    """The training rooms: RT60, distance and geometry drawn per room from seed ``i`` (0-based)."""
    specs = []
    for i in range(config.train_rooms):
        rng = np.random.default_rng(i)
        rt60 = float(rng.uniform(*config.train_rt60))
        distance = float(rng.uniform(*config.train_distance))
        for _ in range(10_000):
            length = rng.uniform(*config.train_length)
            width = rng.uniform(config.train_width[0], min(config.train_width[1], length))
            dims = (round(length, 2), round(width, 2), round(rng.uniform(*config.train_height), 2))
            if all(geometry_distance(dims, g) >= GEOMETRY_MARGIN_M for g in config.eval_geometries):
                try:
                    mic, talker = _place(dims, distance, rng, tries=200)
                except RoomBankError:
                    continue  # too small for this distance: draw another room
                break
        else:
            raise RoomBankError(f"training room {i}: no geometry fits a {distance:.2f} m talker; widen the ranges")
        specs.append(RoomSpec("train", i, dims, round(rt60, 4), round(distance, 4), mic, talker))
    return specs


def evaluation_room_specs(config: RoomBankConfig = RoomBankConfig()) -> list[RoomSpec]:
    """The evaluation grid: every RT60 x distance cell in every evaluation geometry, ``eval_positions``
    placements each, seeded from ``EVAL_SEED_BASE`` upward."""
    specs = []
    seed = EVAL_SEED_BASE
    for rt60 in config.eval_rt60:
        for distance in config.eval_distance:
            for dims in config.eval_geometries:
                for _ in range(config.eval_positions):
                    rng = np.random.default_rng(seed)
                    mic, talker = _place(dims, distance, rng)
                    specs.append(RoomSpec("eval", seed, tuple(dims), rt60, distance, mic, talker))
                    seed += 1
    return specs


def _sabine_absorption(rt60: float, dims) -> float:
    length, width, height = dims
    volume = length * width * height
    surface = 2 * (length * width + length * height + width * height)
    return 24 * math.log(10) * volume / (SPEED_OF_SOUND * surface * rt60)


def simulate_room(spec: RoomSpec, config: RoomBankConfig = RoomBankConfig(), max_passes: int = 6) -> RoomResponse:
    """Simulate ``spec``'s RIR with the walls' absorption searched until the measured RT60 is within
    the tolerance of the target (``_find_absorption``), keeping the closest RIR if none is.

    The search first stops the image sources at ``CALIBRATION_ORDER`` of the RT60 (cheap: the image
    count grows with the cube of the order), then goes on at ``FINAL_ORDER``, where the tail is ~50 dB
    down: the longer tail lengthens the fit, most in small near-cubic rooms. The RT60 recorded is the
    kept RIR's.
    """
    import pyroomacoustics as pra

    def run(absorption: float, order_factor: float) -> np.ndarray:
        pra.random.seed(numpy=spec.seed, libroom=spec.seed)
        max_order = math.ceil(SPEED_OF_SOUND * spec.rt60 * order_factor / min(spec.dims))
        room = pra.ShoeBox(list(spec.dims), fs=SAMPLE_RATE, materials=pra.Material(absorption),
                           max_order=max_order, use_rand_ism=True, max_rand_disp=config.max_rand_disp,
                           air_absorption=False)
        room.add_source(list(spec.talker))
        room.add_microphone(list(spec.mic))
        hpf_was = pra.constants.get("rir_hpf_enable")
        pra.constants.set("rir_hpf_enable", False)  # its high-pass is zero-phase: see RIR_HIGHPASS_HZ
        try:
            room.compute_rir()
        finally:
            pra.constants.set("rir_hpf_enable", hpf_was)
        highpass = butter(2, RIR_HIGHPASS_HZ, btype="highpass", fs=SAMPLE_RATE, output="sos")
        return sosfilt(highpass, np.asarray(room.rir[0][0], dtype=np.float64)).astype(np.float32)

    def calibration(absorption: float) -> tuple[None, float]:
        return None, measure_rt60(run(absorption, CALIBRATION_ORDER))

    def final(absorption: float) -> tuple[np.ndarray, float]:
        rir = run(absorption, FINAL_ORDER)
        return rir, measure_rt60(rir)

    guess = min(MAX_ABSORPTION, _sabine_absorption(spec.rt60, spec.dims) * SABINE_CORRECTION)
    guess, _ = _find_absorption(calibration, guess, spec.rt60, config.rt60_tolerance, max_passes)
    absorption, (rir, measured) = _find_absorption(final, guess, spec.rt60, config.rt60_tolerance, FINAL_PASSES)
    return RoomResponse(spec, _trim_tail(rir), measured, absorption)


def _find_absorption(simulate, absorption: float, target: float, tolerance: float, passes: int):
    """Search the absorption whose RT60 is within ``tolerance`` of ``target``; returns the best
    ``(absorption, simulate(absorption))`` seen. ``simulate(a)`` returns ``(anything, rt60)``.

    RT60 falls as absorption rises, roughly as 1 / absorption (Sabine) but more steeply near full
    absorption (Eyring), where scaling by measured / target overshoots back and forth. So the step is
    that ratio until the target is bracketed, then the secant between the bracket's ends on log-log axes.
    """
    seen: list[tuple[float, float, object]] = []
    for _ in range(passes):
        result, rt60 = simulate(absorption)
        rt60 = rt60 if math.isfinite(rt60) else 0.0  # no decay to fit: far too dead
        seen.append((absorption, rt60, result))
        if abs(rt60 / target - 1) <= tolerance:
            break
        too_long = [x for x in seen if x[1] > target]
        too_short = [x for x in seen if 0 < x[1] < target]
        if too_long and too_short:
            a1, r1, _ = max(too_long, key=lambda x: x[0])
            a2, r2, _ = min(too_short, key=lambda x: x[0])
            t = (math.log(target) - math.log(r1)) / (math.log(r2) - math.log(r1))
            absorption = min(MAX_ABSORPTION, math.exp(math.log(a1) + t * (math.log(a2) - math.log(a1))))
        elif rt60 > 0:
            absorption = min(MAX_ABSORPTION, absorption * rt60 / target)
        else:
            absorption *= 0.7
    best = min(seen, key=lambda x: abs(x[1] / target - 1))
    return best[0], (best[2], best[1])


def _trim_tail(rir: np.ndarray, floor_db: float = -80.0) -> np.ndarray:
    """Drop the part of the RIR after the decay curve passes ``floor_db`` (inaudible under any signal)."""
    decay = schroeder_decay_db(rir)
    below = np.flatnonzero(decay <= floor_db)
    return rir[: int(below[0])] if below.size else rir


# -- the bank ------------------------------------------------------------------------------------


@dataclass
class RoomBank:
    """Training and evaluation RIRs; ``grid()`` groups the evaluation ones by (RT60, distance)."""

    config: RoomBankConfig
    train: list[RoomResponse] = field(default_factory=list)
    eval: list[RoomResponse] = field(default_factory=list)

    def draw(self, rng: np.random.Generator) -> RoomResponse:
        """A training room picked uniformly (the bank already spreads RT60 and distance uniformly)."""
        return self.train[int(rng.integers(len(self.train)))]

    def grid(self) -> dict[tuple[float, float], list[RoomResponse]]:
        cells: dict[tuple[float, float], list[RoomResponse]] = {}
        for r in self.eval:
            cells.setdefault((r.spec.rt60, r.spec.distance), []).append(r)
        return cells

    def rt60_errors(self, split: str = "train") -> np.ndarray:
        """Relative RT60 error (measured / target - 1) of every room of ``split``."""
        rooms = self.train if split == "train" else self.eval
        return np.asarray([r.rt60_measured / r.spec.rt60 - 1 for r in rooms])

    def save(self, path: str | os.PathLike[str]) -> None:
        rooms = self.train + self.eval
        lengths = np.asarray([r.rir.size for r in rooms], dtype=np.int64)
        padded = np.zeros((len(rooms), int(lengths.max(initial=1))), dtype=np.float32)
        for i, r in enumerate(rooms):
            padded[i, : r.rir.size] = r.rir
        specs = json.dumps([asdict(r.spec) for r in rooms])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:  # an interrupted write never leaves a half bank under the real name
            np.savez_compressed(fh, rirs=padded, lengths=lengths, specs=np.asarray(specs),
                                rt60_measured=np.asarray([r.rt60_measured for r in rooms]),
                                absorption=np.asarray([r.absorption for r in rooms]),
                                config=np.asarray(json.dumps(asdict(self.config))))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], config: RoomBankConfig) -> RoomBank:
        try:
            with np.load(path) as z:
                specs = json.loads(str(z["specs"]))
                rirs, lengths = z["rirs"], z["lengths"]
                measured, absorption = z["rt60_measured"], z["absorption"]
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise RoomBankError(f"{path}: not a readable RIR bank ({exc}); delete it to have it made again") from exc
        bank = cls(config)
        for i, s in enumerate(specs):
            spec = RoomSpec(s["split"], s["seed"], tuple(s["dims"]), s["rt60"], s["distance"],
                            tuple(s["mic"]), tuple(s["talker"]))
            response = RoomResponse(spec, rirs[i, : lengths[i]].copy(), float(measured[i]), float(absorption[i]))
            (bank.train if spec.split == "train" else bank.eval).append(response)
        return bank


def bank_path(cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
              config: RoomBankConfig = RoomBankConfig()) -> Path:
    return Path(cache_dir) / "rirs" / f"rirs-{config.cache_key()}.npz"


def load_or_build_bank(cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
                       config: RoomBankConfig = RoomBankConfig(), progress: bool = True) -> RoomBank:
    """The cached bank for ``config``, simulating it (with a progress bar) when absent."""
    path = bank_path(cache_dir, config)
    if path.exists():
        return RoomBank.load(path, config)
    try:
        import pyroomacoustics  # noqa: F401
    except ImportError as exc:
        raise RoomBankError("making the RIR bank needs pyroomacoustics: pip install 'digitspot[train]'") from exc
    from tqdm import tqdm

    specs = training_room_specs(config) + evaluation_room_specs(config)
    bank = RoomBank(config)
    for spec in tqdm(specs, desc="simulating rooms", unit="room", disable=not progress):
        response = simulate_room(spec, config)
        (bank.train if spec.split == "train" else bank.eval).append(response)
    bank.save(path)
    return bank
