"""Driving the real daemon, ``digitspot-edge run``, as a subprocess, and watching its resources."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from digitspot.benchmarks.subscriber import now_ns
from digitspot.edge.devtools.processes import stop_process

CLK_TCK = os.sysconf("SC_CLK_TCK")


# The daemon under test: this interpreter's ``digitspot-edge run``. ``--daemon-command`` replaces the prefix,
# e.g. to measure the daemon of another install (the Pi's /opt/digitspot venv).
DEFAULT_DAEMON = [sys.executable, "-m", "digitspot.edge", "run"]
daemon_prefix: list[str] = list(DEFAULT_DAEMON)


def daemon_command(model: Path, *, host: str, port: int, device_id: str, topic_prefix: str,
                   input_rate: int, extra: list[str] | None = None, print_events: bool = False,
                   min_confidence: float | None = None, input_file: Path | None = None) -> list[str]:
    """``run --source stdin`` (s16le at ``input_rate``), or ``--source file --input`` (not real time)."""
    source = ["--source", "file", "--input", str(input_file)] if input_file else [
        "--source", "stdin", "--input-rate", str(input_rate)]
    cmd = [*daemon_prefix, "--model", str(model), *source, "--mqtt-host", host, "--mqtt-port", str(port),
           "--device-id", device_id, "--topic-prefix", topic_prefix, "--log-level", "warning"]
    if min_confidence is not None:
        cmd += ["--min-confidence", str(min_confidence)]
    if print_events:
        cmd.append("--print")
    return cmd + list(extra or [])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process from /proc/<pid>/stat (clock ticks, 10 ms on most kernels)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


class LineCollector(threading.Thread):
    """Reads a child's text stream line by line into a list (keeps pipes from filling up)."""

    def __init__(self, stream, keep: int | None = None):
        super().__init__(daemon=True)
        self.stream, self.keep, self.lines = stream, keep, []
        self.changed = threading.Condition()
        self.start()

    def run(self) -> None:
        for line in iter(self.stream.readline, ""):
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                if self.keep and len(self.lines) > self.keep:
                    del self.lines[: len(self.lines) - self.keep]
                self.changed.notify_all()

    def wait_for(self, predicate, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    hit = predicate(line)
                    if hit:
                        return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)


class Subscriber:
    """The subscriber process of :mod:`digitspot.benchmarks.subscriber`, started and stopped by us."""

    def __init__(self, host: str, port: int, topics: list[str]):
        cmd = [sys.executable, "-m", "digitspot.benchmarks.subscriber", "--host", host, "--port", str(port)]
        for topic in topics:
            cmd += ["--topic", topic]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out = LineCollector(self.proc.stdout)
        self.err = LineCollector(self.proc.stderr, keep=50)
        if not self.out.wait_for(lambda line: '"subscribed"' in line, timeout=20):
            self.stop()
            raise RuntimeError(f"subscriber did not subscribe: {' | '.join(self.err.lines[-5:])}")

    def messages(self) -> list[dict]:
        return [json.loads(line) for line in list(self.out.lines) if line.startswith("{") and '"topic"' in line]

    def wait_for_message(self, topic: str, text: str, timeout: float) -> dict | None:
        def hit(line: str):
            if line.startswith("{") and '"topic"' in line:
                record = json.loads(line)
                if record["topic"] == topic and text in record["payload"]:
                    return record
            return None
        return self.out.wait_for(hit, timeout)

    def stop(self) -> None:
        stop_process(self.proc)
        self.out.join(2)


class Daemon:
    """One ``digitspot-edge run --source stdin`` child with stdin as a raw pipe we write PCM into."""

    def __init__(self, cmd: list[str], *, capture_stdout: bool = False):
        self.cmd = cmd
        self.started_ns = now_ns()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, bufsize=0,
                                     stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=False)
        self.fd = self.proc.stdin.fileno()
        self.err = LineCollector(_text(self.proc.stderr), keep=200)
        self.out = LineCollector(_text(self.proc.stdout)) if capture_stdout else None
        self.rusage: resource.struct_rusage | None = None
        self.returncode: int | None = None
        self.last_hwm_mb: float | None = None
        threading.Thread(target=self._watch_hwm, daemon=True).start()

    def _watch_hwm(self) -> None:
        """Keep the latest VmHWM (monotonic) while the child lives: it may exit on its own (file input)."""
        while self.returncode is None:
            value = self.peak_rss_mb()
            if value is None:
                break
            self.last_hwm_mb = value
            time.sleep(0.1)

    def write(self, data: bytes) -> int:
        """Write all of ``data`` to the daemon's stdin; returns CLOCK_MONOTONIC ns when the write returned."""
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except BrokenPipeError:
            code = self.wait(10)
            raise RuntimeError(f"the daemon exited ({code}) while reading its input: "
                               + " | ".join(self.stderr_tail(8))) from None
        return now_ns()

    def peak_rss_mb(self) -> float | None:
        """The daemon's own high-water RSS (VmHWM) so far.

        Not ``ru_maxrss`` from wait4: on Linux, exec() folds the high-water mark of the memory image
        it replaces into the child's ru_maxrss, and with vfork/posix_spawn that image is ours (the
        benchmark process, with its numpy streams), so ru_maxrss would report our size, not the daemon's.
        """
        try:
            value = proc_rss_mb(self.proc.pid).get("VmHWM")
        except (OSError, ValueError):
            return self.last_hwm_mb  # gone (or a zombie without memory): the last reading stands
        return value if value is not None else self.last_hwm_mb

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close_input(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    def wait(self, timeout: float) -> int:
        """Reap the child with wait4 so its own rusage (CPU seconds, peak RSS) is ours to read."""
        if self.returncode is not None:
            return self.returncode
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.rusage = usage
                self.returncode = os.waitstatus_to_exitcode(status)
                self.proc.returncode = self.returncode
                break
            if time.monotonic() > deadline:
                self.proc.terminate()
                pid, status, usage = os.wait4(self.proc.pid, 0)
                self.rusage, self.returncode = usage, os.waitstatus_to_exitcode(status)
                self.proc.returncode = self.returncode
                break
            time.sleep(0.02)
        self.err.join(2)
        if self.out:
            self.out.join(5)
        return self.returncode

    def stderr_tail(self, n: int = 10) -> list[str]:
        return list(self.err.lines[-n:])

    def events(self) -> list[dict]:
        """Digit events the daemon printed with --print (JSON lines on stdout)."""
        out = []
        for line in (self.out.lines if self.out else []):
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "digit" in record:
                    out.append(record)
        return out


def _text(stream):
    import io

    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace") if stream is not None else None
