"""Audio sources: a microphone (PyAudio), a file, or raw s16le on stdin, all delivered the same way.

Each source yields :class:`AudioChunk` objects: mono float32 samples at the model's rate plus the
wall-clock time the chunk's last sample arrived. Chunks are small (10-20 ms) and are handed on as
soon as they are read, because every millisecond spent buffering here is added to the time between
the end of a spoken digit and its MQTT message.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitspot.edge.audio_io import BLOCK_VALUES, native_stderr_silenced, open_sound_file, to_mono_float32
from digitspot.edge.errors import AudioError, MissingInputError, UnavailableError
from digitspot.edge.resampler import StreamingResampler

log = logging.getLogger("digitspot.source")

CHUNK_MS = 10


@dataclass
class AudioChunk:
    samples: np.ndarray  # mono float32 in [-1, 1] at the model's sample rate
    received_at: float  # time.time() when the chunk's last sample was read (for latency)


class AudioSource:
    """Base class: iterate for chunks; ``close()`` stops a running iteration from another thread."""

    name = "source"
    realtime = True  # chunks arrive at the pace of real time (mic, stdin, paced file)

    def __init__(self, rate: int):
        self.rate = rate
        self.closed = False
        # Set by the daemon: seconds of audio to gather per wake-up while no word is in progress.
        # Waking 100 times a second to look at silence is most of an idle daemon's CPU; once a word
        # starts this goes back to 0 and every chunk is handled the moment it arrives.
        self.idle_wait = 0.0

    def __iter__(self) -> Iterator[AudioChunk]:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True

    def describe(self) -> str:
        return self.name


def _float_from_s16le(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) * (1.0 / 32768.0)


class FileSource(AudioSource):
    """A WAV/FLAC/OGG file (any rate, any channel count), streamed in blocks so hours of audio fit
    in a few MB. ``realtime`` paces chunks to the wall clock like a microphone; otherwise the file is
    read as fast as the pipeline takes it (throughput benchmarks)."""

    name = "file"

    def __init__(self, path: Path, rate: int, realtime: bool = False, chunk_ms: int = CHUNK_MS):
        super().__init__(rate)
        self.path = Path(path)
        self.realtime = realtime
        self.chunk_ms = chunk_ms
        if self.path.is_dir():
            raise MissingInputError(f"{self.path}: is a directory; --input takes one audio file")
        # Missing, empty, not audio, a device, a FIFO nobody writes to: one clear error (see audio_io).
        self.file = open_sound_file(self.path)
        frames = self.file.frames
        self.file_rate = int(self.file.samplerate)
        self.channels = int(self.file.channels)
        self.duration = frames / self.file_rate
        self.resampler = StreamingResampler(self.file_rate, rate)

    def describe(self) -> str:
        return (f"file {self.path} ({self.duration:.1f} s, {self.file_rate} Hz, {self.channels} ch"
                f"{', real time' if self.realtime else ''})")

    def __iter__(self) -> Iterator[AudioChunk]:
        import soundfile as sf

        block = max(1, self.file_rate * self.chunk_ms // 1000)
        # Not real time: read bigger blocks (fewer Python round trips), still cut into 10 ms chunks; at
        # most BLOCK_VALUES samples per read, however many channels the file has.
        read_block = block if self.realtime else max(block, min(block * 100, BLOCK_VALUES // self.channels))
        out_chunk = self.rate * self.chunk_ms // 1000
        start = time.monotonic()
        emitted = 0  # samples at the model rate handed on
        pending = np.zeros(0, dtype=np.float32)
        try:
            while not self.closed:
                try:
                    with native_stderr_silenced():
                        data = self.file.read(read_block, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                    raise AudioError(f"{self.path}: audio data is corrupt ({str(exc).splitlines()[0]})") from exc
                last = len(data) < read_block
                samples = self.resampler.process(to_mono_float32(data)) if len(data) else np.zeros(0, np.float32)
                if last:
                    samples = np.concatenate((samples, self.resampler.flush()))
                pending = np.concatenate((pending, samples)) if pending.size else samples
                while len(pending) >= out_chunk or (last and len(pending)):
                    piece, pending = pending[:out_chunk], pending[out_chunk:]
                    emitted += len(piece)
                    if self.realtime:
                        due = start + emitted / self.rate
                        delay = due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    yield AudioChunk(piece, time.time())
                if last:
                    break
        finally:
            self.file.close()


class StdinSource(AudioSource):
    """Raw signed 16-bit little-endian mono PCM at ``input_rate`` on stdin (``arecord -t raw -f S16_LE``).

    Reads whatever bytes are available (``os.read``), so a chunk is processed the moment the writer
    delivers it: no fixed block size to wait for.
    """

    name = "stdin"

    def __init__(self, input_rate: int, rate: int, fd: int | None = None, max_read_ms: int = 200):
        super().__init__(rate)
        self.input_rate = input_rate
        if fd is None:
            # Started with stdin closed (`0<&-`), Python sets sys.stdin to None; fd 0 may since have been
            # reused by a file we opened, so it is not read.
            if sys.stdin is None:
                raise MissingInputError("stdin is closed: pipe raw audio in (`arecord ... | digitspot-edge run "
                                        "--source stdin`) or use --source file or mic")
            fd = sys.stdin.fileno()
        self.fd = fd
        self.max_read = max(2, input_rate * max_read_ms // 1000 * 2)
        self.resampler = StreamingResampler(input_rate, rate)

    def describe(self) -> str:
        return f"stdin (s16le mono {self.input_rate} Hz)"

    def __iter__(self) -> Iterator[AudioChunk]:
        carry = b""
        drained = True  # the last read emptied the pipe: input is live, not a file piped in at full speed
        while not self.closed:
            if self.idle_wait > 0 and drained:
                time.sleep(self.idle_wait)
            # select with a timeout so close() from a signal handler is noticed within 0.5 s
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(self.fd, self.max_read)
            except InterruptedError:
                continue
            except OSError as exc:
                raise AudioError(f"stdin: read failed ({exc})") from exc
            if not data:
                break
            received = time.time()
            drained = len(data) < self.max_read
            data = carry + data
            usable = len(data) - (len(data) % 2)
            carry = data[usable:]
            if usable:
                yield AudioChunk(self.resampler.process(_float_from_s16le(data[:usable])), received)
        tail = self.resampler.flush()
        if tail.size:
            yield AudioChunk(tail, time.time())


# --- microphone -------------------------------------------------------------------------------

@dataclass
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate: int
    host_api: str
    is_default: bool


def list_input_devices() -> list[InputDevice]:
    """PortAudio's capture devices (``digitspot-edge devices``). Raises UnavailableError without PyAudio."""
    pyaudio = _import_pyaudio()
    pa = _open_portaudio(pyaudio)
    try:
        try:
            default_index = pa.get_default_input_device_info()["index"]
        except OSError:
            default_index = -1
        devices = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) <= 0:
                continue
            api = pa.get_host_api_info_by_index(info["hostApi"])["name"]
            devices.append(InputDevice(i, str(info["name"]), int(info["maxInputChannels"]),
                                       int(info["defaultSampleRate"]), str(api), i == default_index))
        return devices
    finally:
        pa.terminate()


def _import_pyaudio():
    try:
        import pyaudio
    except ImportError as exc:
        raise UnavailableError(
            "PyAudio is not installed: pip install 'digitspot[mic]' (needs portaudio19-dev to build)"
        ) from exc
    return pyaudio


def _open_portaudio(pyaudio):
    # PortAudio prints ALSA probing noise to stderr at init; it is harmless but confusing in journald,
    # so fd 2 points at /dev/null meanwhile. The log handlers are held for that time, so a line that
    # another thread (MQTT) logs meanwhile waits instead of going to /dev/null with the noise.
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.acquire()
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    try:
        os.dup2(devnull, 2)
        return pyaudio.PyAudio()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        for handler in reversed(handlers):
            handler.release()


class MicSource(AudioSource):
    """A PortAudio capture device via PyAudio, resampled to the model's rate.

    ``device`` is an index or a case-insensitive substring of the device name (None: the default
    input). Capture runs at ``capture_rate`` if given, else at the model's rate when the device takes
    it, else 48000/44100/16000 Hz.

    A microphone that is missing at start (a USB microphone plugged in after boot) or fails later
    (unplugged, sound server gone) is opened again with capped exponential backoff; the source never
    ends for it. ``problem`` holds why there is no audio (None while there is), ``on_status`` hears
    every change of it, and ``on_wait`` is called about every 0.1 s while waiting, so the daemon can
    report the state and keep its watchdog fed without crashing or being restarted.
    """

    name = "mic"

    def __init__(self, rate: int, device: str | None = None, capture_rate: int | None = None,
                 chunk_ms: int = CHUNK_MS, on_status: Callable[[str | None], None] | None = None,
                 on_wait: Callable[[], None] | None = None, max_backoff: float = 30.0):
        super().__init__(rate)
        self.pyaudio = _import_pyaudio()
        self.device_spec = device
        self.requested_rate = capture_rate
        self.chunk_ms = chunk_ms
        self.on_status = on_status or (lambda problem: None)
        self.on_wait = on_wait or (lambda: None)
        self.max_backoff = max_backoff
        self.pa = None
        self.stream = None
        self.capture_rate = 0
        self.device_name = "?"
        self.opened_once = False
        self.problem: str | None = None
        try:
            self.open()
        except UnavailableError as exc:
            self.problem = str(exc)
            log.warning("microphone not available (%s): waiting for it, retrying with backoff (at most every "
                        "%.0f s)", exc, self.max_backoff)

    def describe(self) -> str:
        if self.stream is None and not self.opened_once:
            return f"mic {self.device_spec or 'default'!r} (waiting for it)"
        return f"mic {self.device_name!r} at {self.capture_rate} Hz"

    def _resolve_device(self, pa) -> tuple[int | None, dict]:
        spec = self.device_spec
        if spec is None or str(spec).strip() == "":
            try:
                info = pa.get_default_input_device_info()
            except OSError as exc:
                raise UnavailableError("no default microphone: plug one in or pass --device") from exc
            return None, info
        spec = str(spec).strip()
        candidates = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                candidates.append(info)
        if spec.isdigit():
            for info in candidates:
                if int(info["index"]) == int(spec):
                    return int(spec), info
            raise UnavailableError(f"no capture device with index {spec}: see `digitspot-edge devices`")
        exact = [i for i in candidates if str(i["name"]).lower() == spec.lower()]
        matches = exact or [i for i in candidates if spec.lower() in str(i["name"]).lower()]
        if not matches:
            names = ", ".join(repr(i["name"]) for i in candidates) or "none"
            raise UnavailableError(f"no capture device matches {spec!r} (have: {names}): see `digitspot-edge devices`")
        return int(matches[0]["index"]), matches[0]

    def _pick_rate(self, pa, index: int | None, info: dict) -> int:
        wanted = [self.requested_rate] if self.requested_rate else [self.rate, 16000, 48000, 44100,
                                                                     int(info["defaultSampleRate"])]
        for rate in wanted:
            try:
                if pa.is_format_supported(rate, input_device=int(info["index"]), input_channels=1,
                                          input_format=self.pyaudio.paInt16):
                    return int(rate)
            except ValueError:
                continue
        raise UnavailableError(f"capture device {info['name']!r} supports none of the rates {wanted}")

    def open(self) -> None:
        self._close_stream()
        self.pa = _open_portaudio(self.pyaudio)
        try:
            index, info = self._resolve_device(self.pa)
            self.capture_rate = self._pick_rate(self.pa, index, info)
            self.device_name = str(info["name"])
            self.frames_per_buffer = max(1, self.capture_rate * self.chunk_ms // 1000)
            self.stream = self.pa.open(format=self.pyaudio.paInt16, channels=1, rate=self.capture_rate,
                                       input=True, input_device_index=index,
                                       frames_per_buffer=self.frames_per_buffer)
        except OSError as exc:
            self._close_stream()
            raise UnavailableError(f"cannot open capture device {self.device_spec or 'default'!r}: {exc}") from exc
        except UnavailableError:
            self._close_stream()
            raise
        self.resampler = StreamingResampler(self.capture_rate, self.rate)
        self.opened_once = True

    def _set_problem(self, problem: str | None) -> None:
        if problem != self.problem:
            self.problem = problem
            self.on_status(problem)

    def _close_stream(self) -> None:
        if self.stream is not None:
            try:
                self.stream.stop_stream()
                self.stream.close()
            except OSError:
                pass
            self.stream = None
        if self.pa is not None:
            self.pa.terminate()
            self.pa = None

    def close(self) -> None:
        super().close()

    def __iter__(self) -> Iterator[AudioChunk]:
        backoff = 0.5
        try:
            while not self.closed:
                if self.stream is None:
                    reopening = self.opened_once
                    try:
                        self.open()
                    except UnavailableError as exc:
                        # Logged once per distinct reason (at start, or when lost); the retries are quiet.
                        if self.problem is not None and str(exc) != self.problem:
                            log.warning("microphone still not available: %s", exc)
                        self._set_problem(str(exc))
                        log.debug("microphone not available (%s); retrying in %.1f s", exc, backoff)
                        self._sleep(backoff)
                        backoff = min(self.max_backoff, backoff * 2)
                        continue
                    log.info("microphone %r %s at %d Hz", self.device_name, "back" if reopening else "open",
                             self.capture_rate)
                    self._set_problem(None)
                    backoff = 0.5
                frames = self.frames_per_buffer * max(1, round(self.idle_wait * 1000 / self.chunk_ms))
                try:
                    data = self.stream.read(frames, exception_on_overflow=False)
                except OSError as exc:
                    log.error("microphone %r lost (%s); reopening with backoff", self.device_name, exc)
                    self._set_problem(f"microphone {self.device_name!r} lost: {exc}")
                    self._close_stream()
                    continue
                received = time.time()
                yield AudioChunk(self.resampler.process(_float_from_s16le(data)), received)
        finally:
            self._close_stream()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            self.on_wait()
            time.sleep(max(0.0, min(0.1, deadline - time.monotonic())))
