"""`make demo` end to end, and the check that makes it fail when the digits heard are not the ones spoken.

The end-to-end test runs the command the Makefile runs (read from `make -n demo`), which starts its own
Mosquitto and the daemon on the bundled recording in real time, so it takes about 20 seconds.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from digitspot.edge.devtools.demo import describe_mismatch, spoken_digits

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "artifacts" / "samples"
DEMO_SPOKEN = "427190583671"  # artifacts/samples/demo_digits.txt, in order
HEARD_LINE = re.compile(r"^  heard (\d) ", re.MULTILINE)


def demo_env() -> dict[str, str]:
    """The caller's environment without DIGITSPOT_* settings, as a user's shell would have it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DIGITSPOT_")}


def make_demo_command() -> list[str]:
    """The demo command `make demo` runs, with this interpreter in place of the edge venv's."""
    proc = subprocess.run(["make", "--no-print-directory", "-n", "demo"], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "digitspot.edge.devtools.demo" in line]
    assert len(lines) == 1, proc.stdout
    argv = shlex.split(lines[0])
    # make demo runs from the edge-only venv: the base install, no torch
    assert argv[:3] == [".venv-edge/bin/python", "-m", "digitspot.edge.devtools.demo"], lines[0]
    return [sys.executable, *argv[1:]]


def test_the_bundled_label_file_lists_the_digits_spoken():
    assert spoken_digits(SAMPLES / "demo_digits.txt") == DEMO_SPOKEN


def test_an_expect_file_may_hold_only_the_digits(tmp_path: Path):
    bare = tmp_path / "digits.txt"
    bare.write_text("4271 9\n058\n")
    assert spoken_digits(bare) == "42719058"
    nonsense = tmp_path / "nonsense.txt"
    nonsense.write_text("four two seven\n")
    with pytest.raises(ValueError, match="names no digits"):
        spoken_digits(nonsense)


@pytest.mark.parametrize(("spoken", "heard", "line"), [
    ("4271", "4291", "demo: FAILED: heard 4291 but spoken 4271: heard 9 for 7 (spoken #3)"),
    ("427190583671", "42790583671",
     "demo: FAILED: heard 42790583671 but spoken 427190583671: missed 1 (spoken #4)"),
    ("4271", "42771", "demo: FAILED: heard 42771 but spoken 4271: extra 7 (after spoken #3)"),
    ("4271", "94271", "demo: FAILED: heard 94271 but spoken 4271: extra 9 (before the first spoken)"),
    ("4271", "", "demo: FAILED: heard nothing but spoken 4271: missed 4271 (spoken #1-4)"),
])
def test_a_mismatch_is_one_line_naming_the_digits_that_differ(spoken: str, heard: str, line: str):
    assert describe_mismatch(spoken, heard) == line


@pytest.mark.slow
def test_make_demo_hears_every_digit_spoken():
    proc = subprocess.run(make_demo_command(), cwd=ROOT, env=demo_env(), capture_output=True, text=True,
                          check=False, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "".join(HEARD_LINE.findall(proc.stdout)) == DEMO_SPOKEN, proc.stdout
    assert proc.stdout.splitlines()[-1] == f"demo: OK: every digit heard as spoken: {DEMO_SPOKEN} (12 of 12)"
    assert "  status: offline" in proc.stdout  # the daemon shut down cleanly before the broker stopped


def test_the_demo_fails_when_the_digits_heard_differ_from_the_digits_spoken(tmp_path: Path):
    """One spoken 3 (3_theo_1.wav) against a truth file that says 5: exit 1 and one line saying so."""
    expect = tmp_path / "expect.txt"
    expect.write_text("5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "digitspot.edge.devtools.demo", "--input", str(SAMPLES / "3_theo_1.wav"),
         "--expect", str(expect)],
        cwd=tmp_path, env=demo_env(), capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert HEARD_LINE.findall(proc.stdout) == ["3"], proc.stdout
    assert proc.stdout.splitlines()[-1] == "demo: FAILED: heard 3 but spoken 5: heard 3 for 5 (spoken #1)"


def test_a_missing_expect_file_is_one_line_and_exit_66(tmp_path: Path):
    missing = tmp_path / "no-such.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "digitspot.edge.devtools.demo", "--input", str(SAMPLES / "3_theo_1.wav"),
         "--expect", str(missing)],
        cwd=tmp_path, env=demo_env(), capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 66
    assert proc.stderr.splitlines() == [
        f"demo: no expect file at {missing}: pass the file that lists the digits spoken"]
