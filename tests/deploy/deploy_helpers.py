"""Helpers for the deploy tests: paths, the Ansible environment, and an sshd owned by a test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from digitspot.edge.devtools.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# The deploy tests ship artifacts/digitspot.onnx unless DIGITSPOT_TEST_MODEL names a stand-in; figures
# of the shipped model (which digits it hears right) are checked only when it is the one shipped.
SHIPPED_MODEL_UNDER_TEST = "DIGITSPOT_TEST_MODEL" not in os.environ


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def venv_tool(name: str) -> str:
    """A console script of the project venv (ansible-playbook, ansible-lint), or fail saying how to get it."""
    path = VENV_BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} not found: `make venv` installs the dev extra (ansible-core, ansible-lint)")
        return found
    return str(path)


def ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "deploy" / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "LANG": "C.UTF-8",  # ansible-core refuses to run in a non-UTF-8 locale
        "LC_ALL": "C.UTF-8",
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }


class Sshd:
    """OpenSSH's sshd on a free loopback port, accepting only a freshly made key, owned by the test."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.key = workdir / "id_ed25519"
        host_key = workdir / "ssh_host_ed25519_key"
        for path in (self.key, host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        authorized = workdir / "authorized_keys"
        shutil.copy(f"{self.key}.pub", authorized)
        self.config = workdir / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {workdir}/sshd.pid\n"
            f"AuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.log = workdir / "sshd.log"
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {self.log.read_text()}")
                time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.process)
