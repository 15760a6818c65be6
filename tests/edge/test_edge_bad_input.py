"""Bad input cannot hurt: one row per input or fault, with its exit code, its one line, and what must not happen.

Every row of ``CASES`` runs ``digitspot-edge`` as a user would (a real process, a real Mosquitto where a
broker is involved) and checks:

* the exit code the README documents for the case;
* exactly one line on stderr matching the row's pattern: what is wrong and what to do;
* no traceback, and, for ``classify``, strict JSON on stdout with an ``"error"`` key for the bad file;
* "nothing published": where the row points the daemon at a broker, the broker sees nothing from it
  (a subscriber on ``#`` and a marker message published after the process ended prove it);
* "nothing lost": where digits were heard, every one is printed, and those the broker did not get
  are counted in the log and in the exit code.

Faults that need a running daemon (SIGHUP, two daemons with one device id) and the memory bound have
their own tests below the table.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import FIXTURE_MODEL, ROOT, Subscriber, cli_command

from digitspot.edge.audio_io import PIPE_WAIT_S, SILENCE_DBFS, load_audio
from digitspot.edge.card import card_path_for, sha256_of
from digitspot.edge.devtools.local_broker import LocalBroker, free_port
from digitspot.edge.errors import (
    EXIT_CONFIG,
    EXIT_DATAERR,
    EXIT_NOINPUT,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from digitspot.edge.mqtt_publisher import TAKEOVER_BACKOFF_S, TAKEOVER_SESSIONS

DEMO = ROOT / "artifacts" / "samples" / "demo_digits.wav"
SECRET = "hunter2-Zq9-not-a-path"
RATE = 8000


# --- what a row can ask for --------------------------------------------------------------------------

@dataclass
class Ctx:
    """What a row's command is built from: a private directory, FSDD, and (for broker rows) a Mosquitto."""

    tmp: Path
    fsdd: Path
    broker: LocalBroker | None = None

    def path(self, name: str) -> Path:
        return self.tmp / name

    def mqtt(self) -> list[str]:
        """Flags that point the daemon at the row's broker (or, without one, turn MQTT off)."""
        if self.broker is None:
            return ["--no-mqtt"]
        return ["--mqtt-host", self.broker.host, "--mqtt-port", str(self.broker.port), "--device-id", "bad"]


@dataclass(frozen=True)
class Case:
    id: str
    command: Callable[[Ctx], list[str] | str]  # digitspot-edge arguments, or a bash line using {edge}
    code: int
    line: str | None  # regex: exactly one stderr line matches it (None: the case succeeds quietly)
    env: dict[str, str] = field(default_factory=dict)
    broker: bool = False  # the daemon talks to a real broker that must see nothing from it
    secret: str | None = None  # must appear nowhere in the output
    heard: int | None = None  # digits printed (nothing lost), when the run hears any
    digit: int | None = None  # classify: the digit printed for the one good input
    per_file: bool = True  # classify: the failure is the file's (a JSON line), not the model's (none)


def classify(make: Callable[[Ctx], Path | str]) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["classify", "--model", str(FIXTURE_MODEL), str(make(ctx))]


def run_file(make: Callable[[Ctx], Path | str], *extra: str, model: Callable[[Ctx], Path] | None = None):
    def command(ctx: Ctx) -> list[str]:
        chosen = model(ctx) if model else FIXTURE_MODEL
        return ["run", "--model", str(chosen), "--source", "file", "--input", str(make(ctx)), "--print",
                *ctx.mqtt(), *extra]
    return command


def demo(ctx: Ctx) -> Path:
    return DEMO


# --- audio inputs ------------------------------------------------------------------------------------

def wav(ctx: Ctx, name: str, samples: np.ndarray, rate: int = RATE, **kw) -> Path:
    p = ctx.path(name)
    sf.write(str(p), samples, rate, **kw)
    return p


def empty_file(ctx: Ctx) -> Path:
    p = ctx.path("empty.wav")
    p.write_bytes(b"")
    return p


def header_only(ctx: Ctx) -> Path:
    return wav(ctx, "header_only.wav", np.zeros(0, np.float32), subtype="PCM_16")


def not_audio(ctx: Ctx) -> Path:
    p = ctx.path("notes.wav")
    p.write_text("these are not the samples you are looking for\n" * 50)
    return p


def one_sample(ctx: Ctx) -> Path:
    return wav(ctx, "one_sample.wav", np.array([0.3], np.float32), subtype="PCM_16")


def silence(ctx: Ctx) -> Path:
    return wav(ctx, "silence.wav", np.zeros(2 * RATE, np.float32), subtype="PCM_16")


def dc_only(ctx: Ctx) -> Path:
    """A constant offset and nothing else: loud by its mean, silent once the offset is removed."""
    return wav(ctx, "dc.wav", np.full(2 * RATE, 0.4, np.float32), subtype="PCM_16")


def rate_1hz(ctx: Ctx) -> Path:
    """A valid WAV whose header says 1 Hz (libsndfile writes it; nothing recorded it)."""
    p = wav(ctx, "rate.wav", np.zeros(1000, np.float32), subtype="PCM_16")
    data = bytearray(p.read_bytes())
    data[24:28] = struct.pack("<I", 1)  # sample rate
    data[28:32] = struct.pack("<I", 2)  # byte rate of 16-bit mono at 1 Hz
    p.write_bytes(bytes(data))
    return p


def long_clip(ctx: Ctx) -> Path:
    """70 s of faint noise: longer than classify reads (its limit is 60 s)."""
    noise = np.random.default_rng(5).normal(0, 0.01, 70 * RATE).astype(np.float32)
    return wav(ctx, "long.flac", noise, format="FLAC")


def fifo(ctx: Ctx) -> Path:
    p = ctx.path("fifo.wav")
    os.mkfifo(p)
    return p


def missing(ctx: Ctx) -> Path:
    return ctx.path("nope.wav")


# --- models and cards --------------------------------------------------------------------------------

def card_with(**changes) -> Callable[[Ctx], Path]:
    """The fixture model with an edited card: the sha256 still matches, the card no longer tells the truth."""
    def make(ctx: Ctx) -> Path:
        model = ctx.path("edited.onnx")
        shutil.copy(FIXTURE_MODEL, model)
        card = json.loads(card_path_for(FIXTURE_MODEL).read_text())
        card.update(changes)
        card_path_for(model).write_text(json.dumps(card))
        return model
    return make


def three_outputs(symbolic: bool) -> Callable[[Ctx], Path]:
    """A valid ONNX graph [batch, 8000] -> [batch, 3] with the fixture's 10-label card (sha256 updated).

    ``symbolic``: the output goes through a Reshape to its own runtime shape, so onnxruntime cannot infer
    the 3 and the graph declares [batch, classes]: only running it shows the 3."""
    def make(ctx: Ctx) -> Path:
        onnx = pytest.importorskip("onnx")
        from onnx import TensorProto, helper, numpy_helper

        weights = (np.random.default_rng(3).standard_normal((RATE, 3)) * 0.01).astype(np.float32)
        nodes = [helper.make_node("MatMul", ["audio", "w"], ["scores" if symbolic else "logits"])]
        if symbolic:
            nodes += [helper.make_node("Shape", ["scores"], ["shape"]),
                      helper.make_node("Reshape", ["scores", "shape"], ["logits"])]
        graph = helper.make_graph(
            nodes, "three",
            [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", RATE])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "classes" if symbolic else 3])],
            initializer=[numpy_helper.from_array(weights, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 8
        path = ctx.path("three.onnx")
        onnx.save(model, str(path))
        card = json.loads(card_path_for(FIXTURE_MODEL).read_text())
        card.update(sha256=sha256_of(path), file_size_bytes=path.stat().st_size)
        card_path_for(path).write_text(json.dumps(card))
        return path
    return make


def garbage_model(ctx: Ctx) -> Path:
    """Not ONNX at all, with a card whose sha256 matches it."""
    path = ctx.path("garbage.onnx")
    path.write_bytes(os.urandom(4096))
    card = json.loads(card_path_for(FIXTURE_MODEL).read_text())
    card.update(sha256=sha256_of(path))
    card_path_for(path).write_text(json.dumps(card))
    return path


# --- configuration -----------------------------------------------------------------------------------

def openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def self_signed(ctx: Ctx, name: str) -> tuple[Path, Path]:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=ctx.tmp)
    return ctx.path(f"{name}.crt"), ctx.path(f"{name}.key")


def not_a_certificate(ctx: Ctx) -> list[str]:
    ca = ctx.path("ca.pem")
    ca.write_text("-----BEGIN NOTHING-----\nthis is not a certificate\n")
    return ["--mqtt-ca-file", str(ca)]


def cert_key_mismatch(ctx: Ctx) -> list[str]:
    cert, _ = self_signed(ctx, "one")
    _, other_key = self_signed(ctx, "two")
    return ["--mqtt-tls", "--mqtt-tls-insecure", "--mqtt-cert-file", str(cert), "--mqtt-key-file", str(other_key)]


def two_tables(ctx: Ctx) -> list[str]:
    toml = ctx.path("edge.toml")
    toml.write_text('[digitspot]\nmqtt_port = 1883\n\n[edge]\nmqtt-port = 8883\n')
    return ["--config", str(toml)]


def config_run(extra: Callable[[Ctx], list[str]] | list[str]):
    """The demo recording through ``run`` with a bad setting, pointed at a broker that must see nothing."""
    def command(ctx: Ctx) -> list[str]:
        more = extra(ctx) if callable(extra) else extra
        return ["run", "--model", str(FIXTURE_MODEL), "--source", "file", "--input", str(DEMO), *ctx.mqtt(), *more]
    return command


CASES = [
    # audio files through classify: 66 when there is nothing to read, 65 when what is read is unusable
    Case("classify-missing", classify(missing), EXIT_NOINPUT, r"nope\.wav: no such file"),
    Case("classify-directory", classify(lambda ctx: ctx.tmp), EXIT_NOINPUT, r"is a directory"),
    Case("classify-device", classify(lambda ctx: "/dev/zero"), EXIT_NOINPUT, r"/dev/zero: not a regular file"),
    Case("classify-fifo-without-writer", classify(fifo), EXIT_NOINPUT,
         rf"fifo\.wav: a pipe or FIFO that nothing was written to for {PIPE_WAIT_S:.0f} s"),
    Case("classify-empty-file", classify(empty_file), EXIT_DATAERR, r"empty\.wav: is empty \(0 bytes\)"),
    Case("classify-header-only", classify(header_only), EXIT_DATAERR, r"holds no samples"),
    Case("classify-not-audio", classify(not_audio), EXIT_DATAERR, r"notes\.wav: not a readable audio file"),
    Case("classify-one-sample", classify(one_sample), EXIT_DATAERR, r"one_sample\.wav: no speech: 0\.1 ms"),
    Case("classify-silence", classify(silence), EXIT_DATAERR, r"silence\.wav: no speech: .* silence"),
    Case("classify-dc-offset-only", classify(dc_only), EXIT_DATAERR, r"dc\.wav: no speech"),
    Case("classify-rate-1hz", classify(rate_1hz), EXIT_DATAERR, r"rate\.wav: the header says 1 Hz"),
    Case("classify-longer-than-60s", classify(long_clip), EXIT_DATAERR,
         r"long\.flac: 70 s of audio is longer than the 60 s limit.*run --source file"),
    Case("classify-process-substitution",
         lambda ctx: f"{{edge}} classify --model {shlex.quote(str(FIXTURE_MODEL))} "
                     f"<(cat {shlex.quote(str(ctx.fsdd / '3_jackson_0.wav'))})",
         EXIT_OK, None, digit=3),
    # audio through run
    Case("run-file-fifo-without-writer", run_file(fifo), EXIT_NOINPUT, r"fifo\.wav: a pipe or FIFO"),
    Case("run-file-empty", run_file(empty_file), EXIT_DATAERR, r"empty\.wav: is empty"),
    Case("run-file-device", run_file(lambda ctx: "/dev/zero"), EXIT_NOINPUT, r"not a regular file"),
    # stdin
    Case("run-stdin-closed",
         lambda ctx: f"exec {{edge}} run --model {shlex.quote(str(FIXTURE_MODEL))} --source stdin --no-mqtt 0<&-",
         EXIT_NOINPUT, r"stdin is closed: pipe raw audio in"),
    Case("run-stdin-empty", lambda ctx: ["run", "--model", str(FIXTURE_MODEL), "--source", "stdin", "--no-mqtt"],
         EXIT_OK, None, heard=0),
    # models and cards: refused at load, before READY and before anything reaches the broker
    Case("card-sample-rate-string", run_file(demo, model=card_with(sample_rate="8000")), EXIT_DATAERR,
         r"model card sample_rate = '8000' is str, not a whole number", broker=True),
    Case("card-window-fraction", run_file(demo, model=card_with(window_samples=8000.5)), EXIT_DATAERR,
         r"model card window_samples = 8000\.5 is float, not a whole number", broker=True),
    Case("card-sample-rate-1", run_file(demo, model=card_with(sample_rate=1)), EXIT_DATAERR,
         r"model card sample_rate = 1 Hz, but this runtime runs models at 8000 Hz only", broker=True),
    Case("card-sample-rate-16k", run_file(demo, model=card_with(sample_rate=16000)), EXIT_DATAERR,
         r"model card sample_rate = 16000 Hz", broker=True),
    Case("card-window-not-the-graphs", run_file(demo, model=card_with(sample_rate=8000, window_samples=16000)),
         EXIT_DATAERR, r"the graph's 'audio' is \['batch', 8000\], the card's window_samples make it "
                       r"\['batch', 16000\]; model and card do not belong together", broker=True),
    Case("card-nine-labels", run_file(demo, model=card_with(labels=[str(d) for d in range(9)])), EXIT_DATAERR,
         r"the graph's 'logits' is \['batch', 10\], the card's labels make it \['batch', 9\]", broker=True),
    Case("card-labels-not-digits", run_file(demo, model=card_with(labels=list("abcdefghij"))), EXIT_DATAERR,
         r"card labels .* are not digits 0-9", broker=True),
    Case("card-input-name", run_file(demo, model=card_with(input_name="wave")), EXIT_DATAERR,
         r"the graph's inputs are \['audio'\], the card says 'wave'", broker=True),
    Case("model-three-outputs-classify", lambda ctx: ["classify", "--model", str(three_outputs(False)(ctx)),
                                                      str(ctx.fsdd / "3_jackson_0.wav")],
         EXIT_DATAERR, r"the graph's 'logits' is \['batch', 3\], the card's labels make it \['batch', 10\]",
         per_file=False),
    Case("model-three-outputs-run", run_file(demo, model=three_outputs(False)), EXIT_DATAERR,
         r"the graph's 'logits' is \['batch', 3\]", broker=True),
    Case("model-three-outputs-symbolic", run_file(demo, model=three_outputs(True)), EXIT_DATAERR,
         r"the graph gives \[1, 3\] scores for one window, the card's 10 labels need \[1, 10\]", broker=True),
    Case("model-not-onnx", run_file(demo, model=garbage_model), EXIT_DATAERR,
         r"onnxruntime cannot load the model", broker=True),
    # configuration: 78, one line, before anything is published
    Case("config-discovery-wildcard", config_run(["--discovery-prefix", "home/#"]), EXIT_CONFIG,
         r"^digitspot-edge: error: discovery_prefix = 'home/#': must not contain the MQTT wildcards", broker=True),
    Case("config-discovery-empty", config_run(["--discovery-prefix", ""]), EXIT_CONFIG,
         r"^digitspot-edge: error: discovery_prefix = '': must be a non-empty topic", broker=True),
    Case("config-device-id-70000", config_run(["--device-id", "d" * 70_000]), EXIT_CONFIG,
         r"^digitspot-edge: error: device_id = 'd{10,}\.\.\. \(70000 characters\): makes a topic longer than "
         r"MQTT's 65535 bytes.{0,40}$", broker=True),
    Case("config-keepalive-100000", config_run(["--mqtt-keepalive", "100000"]), EXIT_CONFIG,
         r"^digitspot-edge: error: mqtt_keepalive = 100000: must be between 5 and 65535 seconds", broker=True),
    Case("config-onset-db-nan", config_run([]), EXIT_CONFIG,
         r"^digitspot-edge: error: environment variable DIGITSPOT_ONSET_DB: onset_db = 'nan' is not valid "
         r"\(expected a finite number\)", env={"DIGITSPOT_ONSET_DB": "nan"}, broker=True),
    Case("config-onset-db-inf", config_run(["--onset-db", "inf"]), EXIT_CONFIG, r"onset_db = inf is not valid",
         broker=True),
    Case("config-offset-db-negative", config_run(["--offset-db", "-3"]), EXIT_CONFIG,
         r"^digitspot-edge: error: offset_db = -3\.0: must be above 0", broker=True),
    Case("config-ca-not-a-certificate", config_run(not_a_certificate), EXIT_CONFIG,
         r"^digitspot-edge: error: mqtt_ca_file .*ca\.pem: not a usable CA certificate", broker=True),
    Case("config-cert-key-mismatch", config_run(cert_key_mismatch), EXIT_CONFIG,
         r"^digitspot-edge: error: mqtt_cert_file .*one\.crt and mqtt_key_file .*two\.key cannot be used together",
         broker=True),
    Case("config-two-tables-disagree", config_run(two_tables), EXIT_CONFIG,
         r"mqtt_port is set twice with different values \(\[digitspot\] mqtt_port = 1883, \[edge\] mqtt-port = "
         r"8883\); keep one", broker=True),
    Case("config-empty-host", lambda ctx: ["run", "--model", str(FIXTURE_MODEL), "--source", "stdin",
                                           "--mqtt-host", ""],
         EXIT_CONFIG, r"^digitspot-edge: error: mqtt_host = '': must be a host name"),
    Case("config-password-as-password-file", config_run(["--mqtt-username", "u", "--mqtt-password-file", SECRET]),
         EXIT_CONFIG, r"^digitspot-edge: error: mqtt_password_file cannot be read \(FileNotFoundError; the path is "
                      r"not shown", secret=SECRET, broker=True),
    Case("usage-password-glued-to-option", lambda ctx: ["run", f"--mqtt-password-file{SECRET}"], EXIT_USAGE,
         r"^Error: unknown option near --mqtt-password-file \(not shown", secret=SECRET),
    Case("usage-password-after-path", lambda ctx: ["run", "--mqtt-password-file", "/etc/pw", SECRET], EXIT_USAGE,
         r"^Error: run takes no arguments", secret=SECRET),
    # broker faults: digits that do not reach the broker are counted, and a one-shot run says so
    Case("broker-unreachable", lambda ctx: ["run", "--model", str(FIXTURE_MODEL), "--source", "file", "--input",
                                            str(DEMO), "--print", "--mqtt-host", "127.0.0.1", "--mqtt-port",
                                            str(free_port())],
         EXIT_UNAVAILABLE, r"ERROR digitspot\.daemon: 12 of 12 digit\(s\) were NOT delivered", heard=12),
]


# --- running a row -----------------------------------------------------------------------------------

@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def invoke(case: Case, command: list[str] | str, timeout: float = 120) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSPOT_")}
    env.update(case.env)
    if isinstance(command, str):
        argv = ["bash", "-c", command.format(edge=shlex.quote(cli_command()[0]))]
    else:
        argv = cli_command() + command
    result = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
                            check=False)
    return Outcome(result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace"))


def strict_json(line: str) -> dict:
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=refuse)


def nothing_published(broker: LocalBroker, sub: Subscriber) -> list[str]:
    """Topics the daemon published to, once a marker sent after it ended has come back: a message the
    daemon sent reached the broker before the marker, so it reaches the subscriber before it too."""
    marker = Subscriber(broker.host, broker.port, ["test/unused"]).start()  # a connected client to publish with
    try:
        marker.client.publish("test/marker", b"end", qos=1).wait_for_publish(5)
    finally:
        marker.stop()
    assert sub.wait_for(lambda ms: any(m.topic == "test/marker" for m in ms), 10), "marker never arrived"
    return [m.topic for m in sub.messages if m.topic != "test/marker"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, fsdd_dir):
    ctx = Ctx(tmp_path, fsdd_dir)
    sub = None
    if case.broker:
        ctx.broker = LocalBroker(workdir=tmp_path / "broker").start()
        sub = Subscriber(ctx.broker.host, ctx.broker.port, ["#"]).start()
    try:
        command = case.command(ctx)
        out = invoke(case, command)
        assert out.code == case.code, f"exit {out.code}, expected {case.code}: {out.stderr[-2000:]}"
        assert "Traceback" not in out.stderr, out.stderr
        if case.line is not None:
            matching = [line for line in out.stderr.splitlines() if re.search(case.line, line)]
            assert len(matching) == 1, f"expected one line matching {case.line!r}, stderr:\n{out.stderr[-3000:]}"
        if case.code == EXIT_CONFIG:
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr  # nothing but that one line
        if case.secret is not None:
            assert case.secret not in out.stderr and case.secret not in out.stdout
        lines = [strict_json(line) for line in out.stdout.splitlines() if line.strip()]
        if (" classify " in command) if isinstance(command, str) else command[0] == "classify":
            assert len(lines) == (1 if case.per_file else 0), out.stdout
            if case.code == EXIT_OK:
                assert lines[0]["digit"] == case.digit and 0 < lines[0]["confidence"] <= 1
            elif case.per_file:
                assert "digit" not in lines[0] and re.search(case.line, "digitspot-edge: error: " + lines[0]["error"])
        if case.heard is not None:  # nothing lost: every digit heard is printed
            assert len(lines) == case.heard, out.stdout
            assert all(0 <= e["digit"] <= 9 for e in lines)
        if sub is not None:
            assert nothing_published(ctx.broker, sub) == [], "the daemon published despite the bad input"
    finally:
        if sub is not None:
            sub.stop()
        if ctx.broker is not None:
            ctx.broker.close()


def test_every_documented_exit_code_of_the_table_is_in_the_readme():
    """The codes the rows expect, and what they stand for, are the ones the README's table gives."""
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", readme, flags=re.MULTILINE))
    assert {str(c.code) for c in CASES} <= set(table)
    assert "an empty audio file" in table["65"] and "no speech" in table["65"]
    assert "stdin closed" in table["66"] and "FIFO" in table["66"]
    assert "not delivered" in table["69"] and "SIGHUP" in table["0"]


def test_silence_level_is_the_daemons():
    """classify's "no speech" level is the one below which the daemon starts no word."""
    from digitspot.edge.vad_segmenter import ABS_ONSET_DBFS

    assert SILENCE_DBFS == ABS_ONSET_DBFS


# --- faults of a running daemon ----------------------------------------------------------------------

def spoken(fsdd: Path, name: str, lead_s: float = 0.6, tail_s: float = 0.0, seed: int = 0) -> bytes:
    """An FSDD take as raw s16le at 8 kHz after ``lead_s`` of faint noise (the noise floor to learn)."""
    rng = np.random.default_rng(seed)
    clip = load_audio(fsdd / name, RATE)
    audio = np.concatenate([rng.normal(0, 10 ** (-60 / 20), int(lead_s * RATE)), clip,
                            rng.normal(0, 10 ** (-60 / 20), int(tail_s * RATE))])
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def unread_bytes(fd: int) -> int:
    """Bytes still in a pipe (FIONREAD works on either end on Linux): 0 once the reader has read them all."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


def test_sighup_finishes_the_word_in_progress(broker, subscriber_factory, daemon_factory, fsdd_dir):
    """SIGHUP: one log line, the word being spoken is decided and published, exit 0 (it used to kill the
    daemon silently and lose the word)."""
    sub = subscriber_factory(broker.host, broker.port, ["digitspot/hup/digit"])
    daemon = daemon_factory(["--model", str(FIXTURE_MODEL), "--source", "stdin", "--input-rate", str(RATE),
                             "--print", "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
                             "--device-id", "hup", "--log-level", "info"], stdin=subprocess.PIPE)
    # The take ends the audio: no quiet follows it, so the word is still in progress when the signal comes.
    daemon.proc.stdin.write(spoken(fsdd_dir, "3_jackson_0.wav"))
    daemon.proc.stdin.flush()
    wait_until(lambda: "MQTT connected" in daemon.stderr(), 20, "the MQTT connection")
    wait_until(lambda: unread_bytes(daemon.proc.stdin.fileno()) == 0, 20, "the daemon to read all the audio")
    assert daemon.events() == [], "the word ended before the signal: the test proves nothing"
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait(30) == 0, daemon.stderr()
    log = daemon.stderr()
    assert sum("SIGHUP received: stopping" in line for line in log.splitlines()) == 1, log
    assert [e["digit"] for e in daemon.events()] == [3]
    assert sub.wait_for(lambda ms: len(ms) == 1, 10) and sub.messages[0].json()["digit"] == 3
    assert "1 digit(s) heard, 1 delivered to the broker" in log


def test_two_daemons_with_one_device_id_back_off(broker, subscriber_factory, daemon_factory, fsdd_dir):
    """The broker ends each session when the other daemon connects with the same client id. One of them
    says so in one line naming the id and what to do, then reconnects only every TAKEOVER_BACKOFF_S, so
    the other keeps its session and delivers its digits."""
    args = ["--model", str(FIXTURE_MODEL), "--source", "stdin", "--input-rate", str(RATE), "--mqtt-host",
            broker.host, "--mqtt-port", str(broker.port), "--device-id", "twin", "--log-level", "info"]
    sub = subscriber_factory(broker.host, broker.port, ["digitspot/twin/digit"])
    first = daemon_factory(args, stdin=subprocess.PIPE)
    wait_until(lambda: "MQTT connected" in first.stderr(), 20, "the first daemon's connection")
    second = daemon_factory(args, stdin=subprocess.PIPE)
    pattern = re.compile(r"ERROR digitspot\.mqtt: MQTT broker .* ended \d+ sessions in a row within \d+ s: another "
                         r"client is connected with client id 'digitspot-twin' \(a second sensor with device_id "
                         rf"'twin'\?\); give each sensor its own device_id or mqtt_client_id; reconnecting every "
                         rf"{TAKEOVER_BACKOFF_S} s")
    wait_until(lambda: any(pattern.search(d.stderr()) for d in (first, second)), 60, "the takeover line")
    backing, holding = (first, second) if pattern.search(first.stderr()) else (second, first)
    lines = backing.stderr().splitlines()
    assert sum(bool(pattern.search(line)) for line in lines) == 1
    detected_at = next(i for i, line in enumerate(lines) if pattern.search(line))
    lost = [line for line in lines[:detected_at] if "MQTT connection lost" in line]
    assert len(lost) <= TAKEOVER_SESSIONS - 1, lines  # the lines before the pattern was recognised
    # The other daemon keeps its session now: a word it hears arrives.
    holding.proc.stdin.write(spoken(fsdd_dir, "3_jackson_0.wav", tail_s=0.8))
    holding.proc.stdin.flush()
    assert sub.wait_for(lambda ms: len(ms) == 1, 30), holding.stderr()
    assert sub.messages[0].json()["digit"] == 3
    after = backing.stderr().splitlines()[detected_at + 1:]
    assert not any("MQTT connected" in line for line in after), after  # still waiting out its backoff
    for d in (first, second):
        d.proc.stdin.close()
        assert d.wait(30) == 0, d.stderr()
        assert "Traceback" not in d.stderr()


def test_classify_memory_stays_bounded_and_the_batch_goes_on(tmp_path, fsdd_dir):
    """A 675 KB FLAC holding 29 minutes of 8-channel 48 kHz audio once took 3 GB; now it is one error line
    (too long for classify) and the next file in the batch is still classified, in well under 200 MB."""
    big = tmp_path / "29min_8ch.flac"
    block = np.zeros((48000 * 30, 8), np.int16)
    with sf.SoundFile(str(big), "w", 48000, 8, format="FLAC", subtype="PCM_16") as f:
        for _ in range(58):
            f.write(block)
    assert big.stat().st_size < 1_000_000
    out_path, err_path, rss_path = tmp_path / "out", tmp_path / "err", tmp_path / "maxrss_kb"
    # A small Python parent measures classify's peak RSS: measured from this test process, the child's
    # figure would include this process's own size at fork (Linux copies the high-water mark), which
    # depends on what the suite imported before (torch, after the training tests).
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[2:]); "
               "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
               "sys.exit(r.returncode)")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", measure, str(rss_path), *cli_command(), "classify",
                                 "--model", str(FIXTURE_MODEL), str(big), str(fsdd_dir / "3_jackson_0.wav")],
                                stdout=out, stderr=err)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("classify did not finish within 120 s")
    peak_mb = int(rss_path.read_text()) / 1024
    lines = [strict_json(line) for line in out_path.read_text().splitlines()]
    assert proc.returncode == EXIT_DATAERR, err_path.read_text()
    assert "1740 s of audio is longer than the 60 s limit" in lines[0]["error"]
    assert lines[1]["digit"] == 3
    assert peak_mb < 200, f"classify peaked at {peak_mb:.0f} MB"
