"""A private Mosquitto broker on a free loopback port: for tests, ``make demo`` and the benchmarks.

Nothing here is needed on a Pi in production (the daemon talks to whatever broker it is configured
for); it lives in the edge package so that every caller can ``from edge.local_broker import
LocalBroker`` without test dependencies. It needs the ``mosquitto`` binary (Debian package
``mosquitto``) and, for ``add_user``, ``mosquitto_passwd``.

    with LocalBroker() as broker:
        print(broker.host, broker.port)
        broker.stop(); ...; broker.start()   # same port again: an outage and a recovery

TLS: pass ``tls=TlsFiles(cafile, certfile, keyfile)`` to add a TLS listener (``broker.tls_port``);
``users={"name": "password"}`` writes a password file and sets ``allow_anonymous false``.
``persistence=True`` keeps persistent sessions (and their queued messages) across ``restart()``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from digitspot.edge.devtools.processes import stop_process


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False  # ask clients for a certificate signed by cafile


class LocalBroker:
    """Start, stop and restart one Mosquitto process owned by the caller.

    The port stays the same across ``stop()``/``start()`` so clients reconnect to it after an outage.
    ``plain`` controls the plain-TCP listener (on by default); with ``tls`` a second, TLS listener is
    opened on ``tls_port``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        tls: TlsFiles | None = None,
        tls_port: int | None = None,
        users: dict[str, str] | None = None,
        plain: bool = True,
        persistence: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        mosquitto: str | None = None,
        verbose: bool = False,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.tls = tls
        self.tls_port = (tls_port or free_port(host)) if tls else None
        self.users = dict(users or {})
        self.plain = plain
        self.persistence = persistence
        self.verbose = verbose
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="digitspot-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = mosquitto or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(self.binary).exists():
            raise FileNotFoundError(
                "mosquitto not found: install the Debian package `mosquitto` (make sysdeps)"
            )
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path = self.workdir / "mosquitto.conf"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config()

    # -- configuration -------------------------------------------------------------------------
    def _write_config(self) -> None:
        # persistence keeps sessions and queued QoS 1 messages of offline clients across a restart
        lines = [f"persistence {'true' if self.persistence else 'false'}", f"persistence_location {self.workdir}/",
                 "log_dest stderr", "log_type error", "log_type warning"]
        if self.verbose:
            lines += ["log_type notice", "log_type information", "connection_messages true"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Started as root, mosquitto would drop to user `mosquitto`, which cannot read our private
            # temporary files (password file, keys). This broker is a test/demo tool: keep the caller's user.
            lines.append("user root")
        lines.append("per_listener_settings false")
        if self.users:
            pwfile = self.workdir / "passwords"
            pwfile.write_text("")
            passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            for name, password in self.users.items():
                subprocess.run([passwd, "-b", str(pwfile), name, password], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            pwfile.chmod(0o600)
            lines += [f"password_file {pwfile}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.plain:
            lines.append(f"listener {self.port} {self.host}")
        if self.tls:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
            ]
            if self.tls.require_certificate:
                lines.append("require_certificate true")
        self.config_path.write_text("\n".join(lines) + "\n")

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> LocalBroker:
        """Start Mosquitto and wait until its listener(s) accept connections."""
        if self.running:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 (handed to the child)
        self.process = subprocess.Popen([self.binary, "-c", str(self.config_path)],
                                        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        ports = ([self.port] if self.plain else []) + ([self.tls_port] if self.tls else [])
        deadline = time.monotonic() + timeout
        for port in ports:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited at start: {self.log_tail()}")
                try:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"mosquitto did not listen on {port}: {self.log_tail()}")
                    time.sleep(0.02)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop Mosquitto (SIGTERM, then SIGKILL if it does not go)."""
        if self.process is None:
            return
        stop_process(self.process, timeout)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> LocalBroker:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalBroker({self.host}:{self.port}, running={self.running})"
