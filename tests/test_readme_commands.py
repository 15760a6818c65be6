"""Every command the README shows is exercised, so a reader who copies one gets what the README says.

Commands are the lines of the README's ```sh blocks and the inline code spans that start with a
program (`make ...`, `digitspot-edge ...`). Each must be a key of EXERCISED, and every key must still
be in the README, so the list cannot rot. A command is exercised by running it (cheap ones: `classify`
on a bundled sample, the daemon on the bundled recording, `mosquitto_sub` against a private broker),
by its `--help` form (every flag the README passes must be listed), by its dry run (`make -n`), or, when
it needs a Pi or minutes of work, by naming the test elsewhere in the suite that runs it; that test
must exist.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SAMPLES = ROOT / "artifacts" / "samples"
BIN = Path(sys.executable).parent
PROGRAMS = ("make", "digitspot-edge", "digitspot-train", "pip", "python", "mosquitto_sub", "journalctl",
            "systemctl", "arecord", "sudo")


# -- what the README shows ------------------------------------------------------------------------------

def _strip_comment(line: str) -> str:
    """Drop a trailing `# comment` (a # after whitespace; `'digitspot/#'` keeps its #)."""
    return re.sub(r"(^|\s+)#(\s.*)?$", "", line).strip()


def sh_blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"^```sh\n(.*?)^```", text, re.DOTALL | re.MULTILINE)]


def readme_commands(text: str) -> list[str]:
    commands: list[str] = []
    for block in sh_blocks(text):
        pending = ""
        for raw in block:
            line = _strip_comment(raw)
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line = " ".join((pending + line).split())
            pending = ""
            if line:
                commands.append(line)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    for span in re.findall(r"`([^`\n]+)`", prose):
        words = span.split()
        if len(words) >= 2 and words[0] in PROGRAMS:
            commands.append(" ".join(words))
    return list(dict.fromkeys(commands))


def printed_after(text: str, command: str) -> str:
    """The `# output` line the README shows right after a command in an sh block."""
    for block in sh_blocks(text):
        for line, following in itertools.pairwise(block):
            if _strip_comment(line) == command and following.startswith("# "):
                return following[2:]
    raise AssertionError(f"the README shows no output line after {command!r}")


# -- helpers ------------------------------------------------------------------------------------------

def user_env() -> dict[str, str]:
    """The caller's environment without DIGITSPOT_* settings, as a reader's shell would have it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DIGITSPOT_")}


def run(argv: list[str], *, cwd: Path = ROOT, stdin: bytes | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    if argv[0] in ("digitspot-edge", "digitspot-train"):
        argv = [str(BIN / argv[0]), *argv[1:]]
    proc = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, timeout=timeout, check=False,
                          env=user_env())
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


def flags_of(command: str) -> list[str]:
    return [word.split("=")[0] for word in shlex.split(command) if word.startswith("--")]


def help_lists_flags(command: str) -> None:
    """`<program> <subcommand> --help` exits 0 and lists every flag the command passes."""
    words = shlex.split(command)
    head = [w for w in words[:2] if not w.startswith("-")]
    proc = run([*head, "--help"])
    assert proc.returncode == 0, proc.stderr
    for flag in flags_of(command):
        assert flag in proc.stdout, f"{' '.join(head)} --help does not list {flag}"


def dry_run(command: str, *make_flags: str) -> str:
    """`make -n` of a make command: what it would run, continuations joined. The venv counts as up to date
    unless other flags are given."""
    words = shlex.split(command)
    assert words[0] == "make"
    proc = run(["make", "--no-print-directory", "-n", *(make_flags or ("-o", "venv")), *words[1:]])
    assert proc.returncode == 0, proc.stderr
    return " ".join(proc.stdout.replace("\\\n", " ").split())


def covered_by(nodeid: str) -> Callable[[str], None]:
    """The command is run by this test elsewhere in the suite; it must exist."""
    def check(_command: str) -> None:
        path, name = nodeid.split("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {re.escape(name)}\(", source, re.MULTILINE), f"{nodeid} does not exist"
    check.__name__ = f"covered_by({nodeid})"
    return check


def make_dry(*expected: str, make_flags: tuple[str, ...] = ()) -> Callable[[str], None]:
    def check(command: str) -> None:
        out = dry_run(command, *make_flags)
        for text in expected:
            assert text in out, f"`{command}` would not run {text!r}:\n{out}"
    return check


# -- the checks -----------------------------------------------------------------------------------------

def classify_prints_what_the_readme_shows(command: str) -> None:
    proc = run(shlex.split(command))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(printed_after(README.read_text(), command))


def classify_works_from_any_directory(command: str) -> None:
    """No --model, run from a directory that is not the repository: the shipped model is package data."""
    words = shlex.split(command)
    sample = ROOT / words[-1]
    proc = run([*words[:-1], str(sample)], cwd=Path("/"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digit"] == int(sample.name[0])


def daemon_hears_the_demo_digits(command: str) -> None:
    proc = run(shlex.split(command))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    spoken = "".join(re.findall(r"^(\d)\s+ends", (SAMPLES / "demo_digits.txt").read_text(), re.MULTILINE))
    assert "".join(e["event_type"] for e in events) == spoken
    card = json.loads((ROOT / "artifacts" / "digitspot.onnx.json").read_text())
    assert {e["model"]["name"] for e in events} == {card["name"]}
    assert {e["model"]["sha256"] for e in events} == {card["sha256"]}


def readme_event_is_the_shipped_models(_command: str) -> None:
    """The README's example event has exactly the fields, model name and sha256 the daemon publishes."""
    text = README.read_text()
    example = json.loads(re.search(r"^```json\n(.*?)^```", text, re.DOTALL | re.MULTILINE).group(1))
    proc = run(["digitspot-edge", "run", "--source", "file", "--input", str(SAMPLES / "7_jackson_0.wav"),
                "--print", "--no-mqtt"])
    assert proc.returncode == 0, proc.stderr
    event = json.loads(proc.stdout.splitlines()[0])
    assert list(example) == list(event)
    assert example["model"] == event["model"]
    assert (example["digit"], example["event_type"]) == (7, "7")


def stdin_takes_arecord_output(command: str) -> None:
    """arecord accepts these flags, and what it writes (s16le mono 16 kHz) through `--source stdin` works."""
    help_text = run(["arecord", "--help"])
    for flag in ("-q", "-f", "-r", "-c", "-t"):
        assert re.search(rf"^{flag}, ", help_text.stdout, re.MULTILINE), f"arecord has no {flag}"
    assert shlex.split(command)[1:] == ["-q", "-f", "S16_LE", "-r", "16000", "-c", "1", "-t", "raw"]
    audio, rate = sf.read(SAMPLES / "7_jackson_0.wav", dtype="float32")
    import soxr

    raw = (np.clip(soxr.resample(audio, rate, 16000), -1, 1) * 32767).astype("<i2").tobytes()
    proc = run(["digitspot-edge", "run", "--source", "stdin", "--input-rate", "16000", "--print", "--no-mqtt"],
               stdin=raw)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["digit"] for line in proc.stdout.splitlines()] == [7]


def mosquitto_sub_sees_the_topics(command: str) -> None:
    """The README's subscription, against a private broker, receives status and digit as documented."""
    from digitspot.edge.devtools.local_broker import LocalBroker

    words = shlex.split(command)
    assert words[:3] == ["mosquitto_sub", "-h", "broker.lan"]
    with LocalBroker() as broker:
        argv = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), *words[3:]]
        sub = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        probed, seen = threading.Event(), threading.Event()

        def read() -> None:
            for line in sub.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("digitspot/probe "):
                    probed.set()
                if line.startswith("digitspot/kitchen/digit "):
                    seen.set()

        threading.Thread(target=read, daemon=True).start()
        try:
            # The subscription is live once a probe on the same pattern comes back (it may be published before
            # mosquitto_sub has subscribed, so it is repeated until one arrives).
            deadline = time.monotonic() + 20
            while not probed.is_set():
                assert time.monotonic() < deadline, f"mosquitto_sub never subscribed: {lines}"
                subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-t", "digitspot/probe",
                                "-m", "x"], check=True, timeout=10)
                probed.wait(0.5)
            proc = run(["digitspot-edge", "run", "--source", "file", "--input", str(SAMPLES / "7_jackson_0.wav"),
                        "--device-id", "kitchen", "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)])
            assert proc.returncode == 0, proc.stderr
            assert seen.wait(20), f"no digit arrived: {lines}"
        finally:
            sub.terminate()
            sub.wait(10)
    assert "digitspot/kitchen/status online" in lines
    digit = next(line for line in lines if line.startswith("digitspot/kitchen/digit "))
    assert json.loads(digit.split(" ", 1)[1])["digit"] == 7


def deploy_dry_run_targets_the_pi(command: str) -> None:
    out = dry_run(command)
    assert ("ansible-playbook deploy/playbook.yml -i 'kitchen-pi.local,' -e digitspot_hosts=all -u pi "
            "-e digitspot_mqtt_host=192.168.1.10 -e digitspot_audio_device=USB") in out, out


def device_bench_runs_the_installed_benchmarks(command: str) -> None:
    """The device's Makefile (rendered from the role's template as make deploy does), dry-run with the README's
    arguments, runs the venv's `digitspot.benchmarks` with --short and the broker; that CLI takes every flag."""
    import jinja2

    template = (ROOT / "deploy" / "roles" / "digitspot" / "templates" / "Makefile.j2").read_text()
    env = jinja2.Environment(keep_trailing_newline=True)
    env.filters["basename"] = os.path.basename
    makefile = env.from_string(template).render(digitspot_prefix="/opt/digitspot",
                                                digitspot_model=str(ROOT / "artifacts" / "digitspot.onnx"))
    words = shlex.split(command)
    assert words[:3] == ["make", "-C", "/opt/digitspot"]
    proc = subprocess.run(["make", "-n", "-f", "-", *words[3:]], input=makefile, capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.replace("\\\n", " ").split())
    assert "/opt/digitspot/venv/bin/python -m digitspot.benchmarks" in out, out
    assert "--short" in out and "--broker 192.168.1.10:1883" in out, out
    bench_cmd = out[out.index("-m digitspot.benchmarks"):]
    help_text = run([sys.executable, "-m", "digitspot.benchmarks", "--help"])
    assert help_text.returncode == 0, help_text.stderr
    for flag in set(re.findall(r"(--[a-z][a-z-]+)", bench_cmd)):
        assert flag in help_text.stdout, f"python -m digitspot.benchmarks --help does not list {flag}"


def unit_is_named_digitspot(command: str) -> None:
    """journalctl/systemctl name the unit `make deploy` installs: systemd/digitspot.service."""
    assert shlex.split(command)[-1] == "digitspot"
    assert (ROOT / "systemd" / "digitspot.service").is_file()


def base_install_has_no_torch(_command: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("torch") for dep in project["dependencies"])
    assert {"mic", "train", "dev"} <= set(project["optional-dependencies"])
    assert any(dep.startswith("torch") for dep in project["optional-dependencies"]["train"])


def make_help_lists_the_targets(command: str) -> None:
    proc = run(shlex.split(command))
    assert proc.returncode == 0, proc.stderr
    targets = {line.split("\t")[0] for line in proc.stdout.splitlines()}
    assert {"demo", "test", "deploy", "bench", "train", "docs", "data", "venv"} <= targets, targets


def runs_and_exits_0(command: str) -> None:
    proc = run(shlex.split(command))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


# -- the list ------------------------------------------------------------------------------------------

EXERCISED: dict[str, list[Callable[[str], None]]] = {
    "make demo": [make_dry("-m digitspot.edge.devtools.demo"),
                  covered_by("tests/edge/test_demo.py::test_make_demo_hears_every_digit_spoken")],
    "make test": [make_dry("-m pytest -q tests")],
    "make help": [make_help_lists_the_targets],
    "make data": [make_dry("free-spoken-digit-dataset")],
    "make venv": [make_dry("install -q -e '.[train,dev,mic]'", make_flags=("-B",))],
    "make train": [make_dry("digitspot-train all"),
                   covered_by("tests/train/test_pipeline_quick.py::test_every_stage_saved_its_config")],
    "make bench": [make_dry("-m digitspot.benchmarks"),
                   covered_by("tests/benchmarks/test_bench_run.py::test_targets_and_markdown")],
    "pip install .": [base_install_has_no_torch,
                      covered_by("tests/edge/test_torch_free.py::test_classify_from_outside_the_repository_with_no_flags")],
    "digitspot-edge classify artifacts/samples/7_jackson_0.wav": [classify_prints_what_the_readme_shows,
                                                                  classify_works_from_any_directory],
    "digitspot-edge classify FILE...": [help_lists_flags],
    "digitspot-edge run --source file --input artifacts/samples/demo_digits.wav --print --no-mqtt": [
        help_lists_flags, daemon_hears_the_demo_digits, readme_event_is_the_shipped_models],
    "digitspot-edge devices": [help_lists_flags,
                               covered_by("tests/edge/test_mic_pulseaudio.py::test_devices_lists_the_virtual_microphone")],
    "digitspot-edge run --device USB --mqtt-host broker.lan --device-id kitchen": [
        help_lists_flags,
        covered_by("tests/edge/test_mic_pulseaudio.py::test_capture_through_pulseaudio_and_survive_losing_the_mic")],
    "digitspot-edge run": [help_lists_flags],
    "digitspot-edge run --help": [runs_and_exits_0],
    "mosquitto_sub -h broker.lan -t 'digitspot/#' -v": [mosquitto_sub_sees_the_topics],
    "arecord -q -f S16_LE -r 16000 -c 1 -t raw": [stdin_takes_arecord_output],
    'make deploy HOST=pi@kitchen-pi.local ANSIBLE_ARGS="-e digitspot_mqtt_host=192.168.1.10 '
    '-e digitspot_audio_device=USB"': [
        deploy_dry_run_targets_the_pi, covered_by("tests/deploy/test_deploy_playbook.py::test_first_run_deploys")],
    'make -C /opt/digitspot bench BENCH_SHORT=1 BENCH_ARGS="--broker 192.168.1.10:1883"': [
        device_bench_runs_the_installed_benchmarks],
    "systemctl status digitspot": [unit_is_named_digitspot,
                                   covered_by("tests/deploy/test_deploy_unit.py::test_systemd_analyze_verify")],
    "journalctl -u digitspot": [unit_is_named_digitspot,
                                covered_by("tests/deploy/test_deploy_unit.py::test_execstart_runs_as_written")],
}


def test_readme_extraction_finds_block_and_inline_commands():
    text = ("Say `make demo` or `digitspot-edge`.\n```sh\nmake a   # comment\nmosquitto_sub -t 'x/#' -v\n"
            "make b \\\n  C=1\n# only a comment\n```\n```json\n{\"make\": 1}\n```\n")
    assert readme_commands(text) == ["make a", "mosquitto_sub -t 'x/#' -v", "make b C=1", "make demo"]


def test_every_readme_command_is_exercised():
    shown = readme_commands(README.read_text())
    missing = [c for c in shown if c not in EXERCISED]
    assert not missing, f"README commands no test exercises (add them to EXERCISED): {missing}"
    stale = [c for c in EXERCISED if c not in shown]
    assert not stale, f"EXERCISED lists commands the README no longer shows: {stale}"


@pytest.mark.parametrize("command", list(EXERCISED), ids=lambda c: re.sub(r"\W+", "-", c)[:60].strip("-"))
def test_readme_command(command: str):
    for check in EXERCISED[command]:
        check(command)
