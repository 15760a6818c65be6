"""Reading audio files into the one format the model wants: mono float32 at the model's sample rate.

Any WAV/FLAC/OGG that libsndfile reads is accepted, at any sample rate; stereo is mixed down and the
rate converted with soxr (the same resampler the live microphone path uses).

Memory stays bounded whatever a file claims: it is read in blocks of at most ``BLOCK_VALUES`` samples,
each block mixed down and resampled before the next is read, and a file longer than the caller's
``max_seconds`` is refused (from its header, and again while reading, since a header can lie). A FLAC of
a few hundred KB can hold half an hour of 8-channel 48 kHz silence: read whole, that is gigabytes.

Inputs that are not regular files are handled here too: a pipe (``classify <(sox ...)``, a named FIFO)
is read into memory with a deadline and a size cap, since libsndfile needs to seek; a FIFO nobody
writes to is reported instead of waited on forever; devices and sockets are refused.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import select
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from digitspot.edge.errors import AudioError, MissingInputError

# The longest file load_audio reads by default. `classify` passes its own, much shorter limit.
MAX_FILE_SECONDS = 30 * 60
# Samples (all channels together) decoded per block: 4 MB of float32, whatever the channel count.
BLOCK_VALUES = 1 << 20
# A pipe's whole content is held in memory (libsndfile must seek in it): cap it.
MAX_PIPE_BYTES = 64 * 1024 * 1024
# How long a pipe or FIFO may stay silent (no writer, or a writer that stopped) before we give up.
PIPE_WAIT_S = 5.0
# File sample rates outside this range are a corrupt header, not audio anyone recorded.
MIN_FILE_RATE = 1000
MAX_FILE_RATE = 768_000
# "No speech": shorter than the daemon's shortest word (its default min_segment_ms), or no 10 ms frame
# louder than SILENCE_DBFS, which is also the quietest sound that starts a word in the daemon
# (vad_segmenter.ABS_ONSET_DBFS) or runs a streaming model (stream_pipeline.ABS_ACTIVE_DBFS).
MIN_SPEECH_MS = 60
SILENCE_DBFS = -65.0


def to_mono_float32(data: np.ndarray) -> np.ndarray:
    """Mix channels down and replace NaN/Inf (a broken float WAV must not poison the model) with 0."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        with np.errstate(over="ignore", invalid="ignore"):  # huge float samples: inf/NaN, replaced below
            data = data[:, 0].copy() if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        data = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(data, -1.0, 1.0, out=data)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what libsndfile's decoders print straight to file descriptor 2 while they run.

    mpg123 (an MP3 stream inside a WAV) writes "Note: Illegal Audio-MPEG-Header ..." lines about corrupt
    data there; the exception that follows says it once, in the file's one error line. The log handlers
    are held meanwhile, so a line another thread logs waits instead of vanishing into /dev/null.
    """
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.acquire()
    try:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to protect
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    finally:
        for handler in reversed(handlers):
            handler.release()


def _unreadable(path: Path, exc: BaseException) -> AudioError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return AudioError(f"{path}: not a readable audio file ({reason}); use WAV, FLAC or OGG")


def read_pipe(path: Path, max_bytes: int = MAX_PIPE_BYTES, wait_s: float = PIPE_WAIT_S) -> bytes:
    """The whole content of a pipe or FIFO, read without ever blocking for longer than ``wait_s``.

    Opened non-blocking, so a FIFO with no writer does not hang the open; then each read waits at most
    ``wait_s`` for data (Linux does not report end-of-file on a FIFO that never had a writer, so a
    deadline is the only way to tell "nobody is writing").
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise MissingInputError(f"{path}: cannot open ({exc.strerror}); check the path") from exc
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], wait_s)
            if not ready:
                raise MissingInputError(
                    f"{path}: a pipe or FIFO that nothing was written to for {wait_s:.0f} s; start the writer "
                    "first, or pass a regular file")
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                return b"".join(chunks)
            total += len(data)
            if total > max_bytes:
                raise AudioError(f"{path}: a pipe delivering more than {max_bytes >> 20} MB; save the audio to a "
                                 "file and pass that")
            chunks.append(data)
    finally:
        os.close(fd)


def open_sound_file(path: str | os.PathLike[str]) -> sf.SoundFile:
    """Open an audio input for block reads, or raise the error that says what is wrong with it.

    MissingInputError (exit 66): nothing to read (no such path, a directory, a device or socket, a FIFO
    nobody writes to). AudioError (exit 65): something was read but it is not usable audio (empty, not
    audio, no samples, an implausible sample rate).
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MissingInputError(f"{path}: no such file; check the path") from None
    except OSError as exc:
        raise MissingInputError(f"{path}: cannot read ({exc.strerror}); check the path") from exc
    if stat.S_ISDIR(info.st_mode):
        raise MissingInputError(f"{path}: is a directory; pass audio files (WAV/FLAC/OGG)")
    if stat.S_ISREG(info.st_mode):
        if info.st_size == 0:
            raise AudioError(f"{path}: is empty (0 bytes); record or pick a non-empty audio file")
        source: str | io.BytesIO = str(path)
    elif stat.S_ISFIFO(info.st_mode):
        data = read_pipe(path)
        if not data:
            raise AudioError(f"{path}: the pipe delivered nothing (0 bytes); check the command writing to it")
        source = io.BytesIO(data)
    else:
        raise MissingInputError(f"{path}: not a regular file or a pipe (a device or socket); pass an audio file")
    try:
        with native_stderr_silenced():
            sound = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError, TypeError) as exc:
        raise _unreadable(path, exc) from exc
    try:
        if not MIN_FILE_RATE <= sound.samplerate <= MAX_FILE_RATE:
            raise AudioError(f"{path}: the header says {sound.samplerate} Hz, not a plausible sample rate "
                             f"({MIN_FILE_RATE}-{MAX_FILE_RATE} Hz); the file is corrupt")
        if sound.channels < 1:
            raise AudioError(f"{path}: the header says {sound.channels} channels; the file is corrupt")
        if sound.frames <= 0:
            raise AudioError(f"{path}: audio file holds no samples; record or pick a non-empty file")
    except AudioError:
        sound.close()
        raise
    return sound


def too_long(path: Path, seconds: float, max_seconds: float) -> AudioError:
    return AudioError(f"{path}: {seconds:.0f} s of audio is longer than the {max_seconds:.0f} s limit; a spoken "
                      "digit lasts under 2 s: cut the clip, or use `digitspot-edge run --source file` for recordings")


def load_audio(path: str | os.PathLike[str], sample_rate: int, max_seconds: float = MAX_FILE_SECONDS) -> np.ndarray:
    """Return ``path`` as mono float32 samples in [-1, 1] at ``sample_rate`` Hz.

    Raises MissingInputError when there is nothing to read and AudioError when what is read is not
    usable audio or holds more than ``max_seconds``, each with a message that names the file and says
    what to do. Memory: one block plus the result at ``sample_rate``.
    """
    path = Path(path)
    with open_sound_file(path) as sound:
        rate, channels = int(sound.samplerate), int(sound.channels)
        if sound.frames / rate > max_seconds:
            raise too_long(path, sound.frames / rate, max_seconds)
        budget = int(max_seconds * rate)  # frames; checked while reading too
        block = max(1, BLOCK_VALUES // channels)
        stream = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ") if rate != sample_rate \
            else None
        parts: list[np.ndarray] = []
        frames = 0
        while True:
            try:
                with native_stderr_silenced():
                    data = sound.read(block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                raise _unreadable(path, exc) from exc
            frames += len(data)
            if frames > budget:
                raise too_long(path, frames / rate, max_seconds)
            last = len(data) < block
            mono = to_mono_float32(data)
            if stream is not None:
                mono = stream.resample_chunk(mono, last=last).astype(np.float32, copy=False)
            parts.append(mono)
            if last:
                break
    if frames == 0:
        raise AudioError(f"{path}: audio file holds no samples; record or pick a non-empty file")
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def no_speech_reason(samples: np.ndarray, sample_rate: int) -> str | None:
    """Why ``samples`` cannot hold a spoken digit (too short, or silent), or None when they might.

    The level is that of the loudest 10 ms frame with the DC offset removed, so a constant offset or
    a sound card's hum-free silence reads as silence, as it does in the daemon.
    """
    ms = 1000 * len(samples) / sample_rate
    if ms < MIN_SPEECH_MS:
        return f"{ms:.1f} ms of audio, shorter than the {MIN_SPEECH_MS} ms of the shortest word"
    frame = max(1, sample_rate // 100)
    x = samples.astype(np.float64) - float(np.mean(samples, dtype=np.float64))
    n = len(x) // frame
    loudest = float(np.max(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)))
    level = 10 * np.log10(loudest) if loudest > 0 else -np.inf
    if level < SILENCE_DBFS:
        shown = "silence" if not np.isfinite(level) else f"{level:.0f} dBFS"
        return f"its loudest 10 ms is {shown}, below the {SILENCE_DBFS:.0f} dBFS a word starts at"
    return None


def fit_to_window(samples: np.ndarray, window_samples: int) -> np.ndarray:
    """Make a segment exactly ``window_samples`` long, the way training and serving both do it.

    Shorter segments are centred and zero-padded. Longer ones keep the window with the most energy:
    a spoken digit is under a second, and the loudest second is where the word is, not the breath or
    click at either end. Training imports this function so there is no train/serve skew.
    """
    samples = np.asarray(samples, dtype=np.float32)
    n = samples.shape[0]
    if n == window_samples:
        return samples.copy()
    if n < window_samples:
        out = np.zeros(window_samples, dtype=np.float32)
        start = (window_samples - n) // 2
        out[start : start + n] = samples
        return out
    energy = np.concatenate(([0.0], np.cumsum(samples.astype(np.float64) ** 2)))
    window_energy = energy[window_samples:] - energy[:-window_samples]
    start = int(np.argmax(window_energy))
    return samples[start : start + window_samples].copy()
