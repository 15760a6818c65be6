"""TLS and authentication against a Mosquitto with a TLS listener, a password file and no anonymous access.

The CA and certificates are made here with the openssl command line. Right credentials work; a wrong
password or an unknown CA gives one clear log line and retries (no crash), and the password never
appears in the logs.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from digitspot.edge.devtools.local_broker import LocalBroker, TlsFiles

PASSWORD = "s3cret-Tls-pw-42"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(dirpath: Path, name: str) -> tuple[Path, Path]:
    dirpath.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=dirpath)
    return dirpath / "ca.crt", dirpath / "ca.key"


def make_server_cert(dirpath: Path, ca_crt: Path, ca_key: Path) -> tuple[Path, Path]:
    (dirpath / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
             "-out", "server.csr", cwd=dirpath)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "2", "-extfile", "san.cnf", "-out", "server.crt", cwd=dirpath)
    return dirpath / "server.crt", dirpath / "server.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca_crt, ca_key = make_ca(root / "ca", "digitspot test CA")
    server_crt, server_key = make_server_cert(root / "ca", ca_crt, ca_key)
    other_ca, _ = make_ca(root / "other", "some other CA")
    return {"ca": ca_crt, "cert": server_crt, "key": server_key, "other_ca": other_ca}


@pytest.fixture
def tls_broker(tmp_path, pki):
    b = LocalBroker(workdir=tmp_path / "broker", tls=TlsFiles(pki["ca"], pki["cert"], pki["key"]),
                    users={"edge": PASSWORD, "watcher": "watch-pw"}, plain=False)
    b.start()
    yield b
    b.close()


def wait_for_log(daemon, predicate, timeout: float) -> bool:
    """Poll the daemon's stderr until ``predicate(lines)`` holds or ``timeout`` seconds pass (or it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(daemon.stderr().splitlines()):
            return True
        if daemon.proc.poll() is not None:
            break
        time.sleep(0.05)
    return bool(predicate(daemon.stderr().splitlines()))


def daemon_args(model: Path, broker: LocalBroker, ca: Path, password_file: Path, device: str) -> list[str]:
    return ["--model", str(model), "--source", "stdin", "--mqtt-host", "localhost", "--mqtt-port",
            str(broker.tls_port), "--mqtt-ca-file", str(ca), "--mqtt-username", "edge",
            "--mqtt-password-file", str(password_file), "--device-id", device, "--log-level", "debug"]


def test_tls_with_right_credentials(tls_broker, pki, subscriber_factory, daemon_factory, fixture_model, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    sub = subscriber_factory("localhost", tls_broker.tls_port, ["digitspot/tls/status"], tls_ca=pki["ca"],
                             username="watcher", password="watch-pw")
    daemon = daemon_factory(daemon_args(fixture_model, tls_broker, pki["ca"], pw, "tls"), stdin=subprocess.PIPE)
    assert sub.wait_for(lambda ms: any(m.payload == b"online" for m in ms), 15), daemon.stderr()
    daemon.proc.stdin.close()
    assert daemon.wait(15) == 0
    assert sub.wait_for(lambda ms: ms[-1].payload == b"offline", 5)
    assert PASSWORD not in daemon.stderr()


@pytest.mark.parametrize("case", ["wrong_password", "unknown_ca"])
def test_tls_failures_log_one_clear_line_and_retry(case, tls_broker, pki, daemon_factory, fixture_model, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(("not-the-" + PASSWORD) if case == "wrong_password" else PASSWORD)
    ca = pki["other_ca"] if case == "unknown_ca" else pki["ca"]
    daemon = daemon_factory(daemon_args(fixture_model, tls_broker, ca, pw, "bad"), stdin=subprocess.PIPE)
    # The first failed attempt logs the error; each retry after it (backoff 1, 2 s ...) logs the same
    # problem again at debug level, "(still)". Wait for two retries, then count the error lines.
    assert wait_for_log(daemon, lambda lines: any(" ERROR " in line for line in lines), 20), daemon.stderr()
    assert wait_for_log(daemon, lambda lines: sum(line.endswith("(still)") for line in lines) >= 2, 20), \
        f"no retries logged after the error: {daemon.stderr()}"
    assert daemon.proc.poll() is None, f"daemon died: {daemon.stderr()}"
    log = daemon.stderr()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, f"expected one clear error line, got: {errors}"
    if case == "wrong_password":
        assert "refused the connection" in errors[0] and "password" in errors[0]
    else:
        assert "TLS" in errors[0] and "mqtt_ca_file" in errors[0]
    assert PASSWORD not in log and "not-the-" not in log
    assert "Traceback" not in log
    daemon.proc.stdin.close()
    assert daemon.wait(20) == 0
