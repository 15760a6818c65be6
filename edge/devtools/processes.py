"""Stopping a child process politely, then firmly.

Used by the local broker, the benchmarks' daemons and the deploy tests' sshd: each used to carry its own
copy of the same terminate-wait-kill dance.
"""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code (None if it will not die).

    SIGTERM first so the child can clean up (Mosquitto closes its sockets, the daemon publishes
    "offline" and flushes its queue); SIGKILL so a wedged child never hangs the caller."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            try:
                return process.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
    return process.returncode
