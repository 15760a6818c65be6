#!/usr/bin/env python3
"""Prove the edge package runs on aarch64: classify FSDD test takes under qemu-user, compare with x86.

A Raspberry Pi is an ARM machine, so "it runs on a Pi" is only a hope until the edge stack (onnxruntime,
numpy, webrtcvad, soxr, soundfile and our wheel) has produced the same digits on aarch64 as here.
This script builds that aarch64 world without a Pi:

1. a sysroot with Debian bookworm's arm64 python3.11 and the C libraries it needs
   (``dpkg --add-architecture arm64``, ``apt-get download``, ``dpkg -x``), plus a fake ARM
   ``proc/cpuinfo`` and ``sys/devices/system/cpu/*``: qemu-user resolves absolute paths under its ``-L``
   prefix first, and onnxruntime's CPU detection crashes on the host's x86 cpuinfo;
2. the digitspot wheel and its dependencies as aarch64 wheels (``pip --platform ... --only-binary``),
   pinned to the versions of this machine's venv so that only the architecture differs;
3. ``qemu-aarch64-static -L sysroot sysroot/usr/bin/python3.11 -m digitspot.edge.cli classify`` on N official
   test takes, and the same command with this machine's Python; every digit must be equal;
4. the daemon itself (``digitspot.edge.cli run --source file --print --no-mqtt``: webrtcvad, the resampler, the
   segmenter) on a stream of 8 test takes separated by silence: the same digits on both.

Downloads are cached in ``--cache`` (default ``cache/arm``, gitignored), so a re-run needs no network.
Exit 0 when all predictions agree, 1 otherwise; the summary line starts with ``arm-check:``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from digitspot.edge.devtools.fsdd import digit_of, list_takes

ROOT = Path(__file__).resolve().parent.parent

# Debian bookworm arm64 packages: python3.11 and every shared library it or the wheels load.
ARM64_DEBS = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g",
    "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libstdc++6", "libgcc-s1", "libgomp1",
    "libncursesw6", "libtinfo6", "libuuid1", "libcrypt1", "libnsl2", "libtirpc3",
]
# The edge runtime's dependencies (pyproject's base dependencies), pinned below to this venv's versions.
EDGE_DEPS = ["onnxruntime", "numpy", "webrtcvad-wheels", "paho-mqtt", "click", "soundfile", "soxr"]
AARCH64_PLATFORMS = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"]
QEMU = "qemu-aarch64-static"

# A Raspberry Pi 4 (4x Cortex-A72: implementer 0x41 = ARM, part 0xd08) as onnxruntime's cpuinfo parser expects.
_CPU = """processor\t: {i}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""
CPUINFO = "\n".join(_CPU.format(i=i) for i in range(4)) + "\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B\n"


def log(message: str) -> None:
    print(f"arm-check: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kwargs)


def ensure_arm64_debs(deb_dir: Path) -> list[Path]:
    """Download the arm64 .debs once (needs apt's arm64 indexes: added here when running as root)."""
    deb_dir.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("_")[0]: p for p in deb_dir.glob("*.deb")}
    missing = [name for name in ARM64_DEBS if name not in have]
    if missing:
        foreign = run(["dpkg", "--print-foreign-architectures"], capture_output=True).stdout.split()
        if "arm64" not in foreign:
            if os.geteuid() != 0:
                sys.exit("arm-check: apt has no arm64 indexes; run as root once, or: "
                         "sudo dpkg --add-architecture arm64 && sudo apt-get update")
            log("adding the arm64 architecture to apt (dpkg --add-architecture arm64; apt-get update)")
            run(["dpkg", "--add-architecture", "arm64"])
            run(["apt-get", "update", "-qq"])
        log(f"downloading {len(missing)} arm64 .debs into {deb_dir}")
        # apt's _apt sandbox user may not be able to write here; that only costs a warning.
        run(["apt-get", "download", "-qq", *[f"{name}:arm64" for name in missing]], cwd=deb_dir,
            stderr=subprocess.DEVNULL)
        have = {p.name.split("_")[0]: p for p in deb_dir.glob("*.deb")}
    return [have[name] for name in ARM64_DEBS]


def ensure_sysroot(cache: Path) -> Path:
    debs = ensure_arm64_debs(cache / "debs")
    sysroot = cache / "sysroot"
    stamp = sysroot / ".digitspot-stamp"
    key = hashlib.sha256(("\n".join(p.name for p in debs) + CPUINFO).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == key:
        return sysroot
    log(f"unpacking {len(debs)} .debs into {sysroot}")
    shutil.rmtree(sysroot, ignore_errors=True)
    sysroot.mkdir(parents=True)
    for deb in debs:
        run(["dpkg", "-x", str(deb), str(sysroot)])
    (sysroot / "proc").mkdir()
    (sysroot / "proc" / "cpuinfo").write_text(CPUINFO)
    cpu_dir = sysroot / "sys" / "devices" / "system" / "cpu"
    cpu_dir.mkdir(parents=True)
    for name in ("possible", "present", "online"):
        (cpu_dir / name).write_text("0-3\n")
    stamp.write_text(key)
    return sysroot


def pinned_requirements() -> list[str]:
    """The edge dependencies at the versions installed here, so x86 and aarch64 differ only in architecture."""
    pins = []
    for name in EDGE_DEPS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def install_site(cache: Path, wheel: Path, site: Path) -> list[str]:
    """pip-install the wheel and its pinned dependencies for aarch64 into ``site`` (wheels cached)."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = pinned_requirements()
    constraints = site.parent / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    platform_args = [arg for plat in AARCH64_PLATFORMS for arg in ("--platform", plat)]
    target_args = [*platform_args, "--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:"]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    offline = subprocess.run(
        [*pip, "install", "--quiet", "--no-warn-conflicts", "--target", str(site), *target_args,
         "--no-index", "--find-links", str(wheels), "-c", str(constraints), str(wheel)],
        text=True, capture_output=True, check=False,
    )
    if offline.returncode != 0:
        log(f"downloading aarch64 wheels into {wheels} (pinned: {' '.join(pins)})")
        run([*pip, "download", "--quiet", "--dest", str(wheels), *target_args, "-c", str(constraints),
             str(wheel)], stdout=subprocess.DEVNULL)
        shutil.rmtree(site, ignore_errors=True)
        run([*pip, "install", "--quiet", "--no-warn-conflicts", "--target", str(site), *target_args,
             "--no-index", "--find-links", str(wheels), "-c", str(constraints), str(wheel)],
            stdout=subprocess.DEVNULL)
    return pins


def pick_files(fsdd: Path, count: int) -> list[Path]:
    """``count`` official test takes spread evenly over digits, speakers and takes (deterministic)."""
    files = [t.path for t in list_takes(fsdd, official_test_only=True)]
    if len(files) < count:
        sys.exit(f"arm-check: only {len(files)} FSDD test takes in {fsdd}, need {count}")
    step = len(files) / count
    return [files[int(i * step)] for i in range(count)]


def classify(cmd_prefix: list[str], model: Path, files: list[Path], cwd: Path, env: dict[str, str]) -> dict[str, dict]:
    cmd = [*cmd_prefix, "-m", "digitspot.edge.cli", "classify", "--threads", "1", "--model", str(model),
           *[str(f) for f in files]]
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"arm-check: classify failed (exit {proc.returncode}): {' '.join(cmd[:6])} ...\n{proc.stderr}")
    return {row["path"]: row for row in map(json.loads, proc.stdout.splitlines())}


def write_stream(files: list[Path], path: Path) -> list[int]:
    """Spoken digits separated by 0.7 s of silence, as one WAV: what a microphone would deliver."""
    import numpy as np
    import soundfile as sf

    pieces, rate = [], None
    for f in files:
        audio, sr = sf.read(f, dtype="float32", always_2d=False)
        rate = rate or sr
        if sr != rate:
            continue
        pieces += [np.zeros(int(0.7 * sr), dtype=np.float32), audio]
    pieces.append(np.zeros(int(0.7 * rate), dtype=np.float32))
    sf.write(path, np.concatenate(pieces), rate)
    return [digit_of(f) for f in files]


def run_daemon(cmd_prefix: list[str], model: Path, stream: Path, cwd: Path, env: dict[str, str]) -> list[int]:
    cmd = [*cmd_prefix, "-m", "digitspot.edge.cli", "run", "--model", str(model), "--source", "file", "--input", str(stream),
           "--print", "--no-mqtt", "--log-level", "warning"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"arm-check: the daemon failed (exit {proc.returncode}): {' '.join(cmd[:6])} ...\n{proc.stderr}")
    return [json.loads(line)["digit"] for line in proc.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cache", type=Path, default=ROOT / "cache" / "arm", help="download cache (gitignored)")
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "digitspot.onnx")
    parser.add_argument("--fsdd", type=Path, default=Path(os.environ.get(
        "FSDD_DIR", ROOT.parent / "shared" / "data" / "fsdd" / "recordings")))
    parser.add_argument("--count", type=int, default=60, help="FSDD test takes to classify (>= 50)")
    parser.add_argument("--wheel", type=Path, default=None, help="digitspot wheel (default: build one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the comparison here")
    args = parser.parse_args(argv)

    if shutil.which(QEMU) is None:
        sys.exit(f"arm-check: {QEMU} not found: apt-get install qemu-user-static (make sysdeps)")
    model = args.model.resolve()
    if not model.is_file():
        sys.exit(f"arm-check: model {model} not found: pass --model PATH (an .onnx with its .onnx.json card)")
    cache = args.cache.resolve()
    started = time.monotonic()
    sysroot = ensure_sysroot(cache)
    files = pick_files(args.fsdd.resolve(), args.count)

    with tempfile.TemporaryDirectory(prefix="digitspot-arm-") as tmp:
        tmp_path = Path(tmp)
        wheel = args.wheel
        if wheel is None:
            out = run([str(ROOT / "deploy" / "build_wheel.sh"), str(tmp_path / "dist"), sys.executable],
                      capture_output=True).stdout.split()
            wheel = Path(out[-1])
        site = tmp_path / "site"
        pins = install_site(cache, wheel.resolve(), site)
        setup_s = time.monotonic() - started

        # cwd is the empty temp dir, so `-m digitspot.edge.cli` imports the installed wheel, never the source tree.
        arm_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1"}
        qemu = [QEMU, "-L", str(sysroot), "-E", f"PYTHONPATH={site}", "-E", "PYTHONNOUSERSITE=1",
                str(sysroot / "usr" / "bin" / "python3.11")]
        probe_code = "import platform, digitspot.edge as edge, onnxruntime; print(platform.machine(), edge.__file__, onnxruntime.__version__)"
        probe = run([*qemu, "-c", probe_code],
                    cwd=tmp_path, env=arm_env, capture_output=True).stdout.split()
        if probe[0] != "aarch64" or not probe[1].startswith(str(site)):
            sys.exit(f"arm-check: emulated interpreter is not aarch64 with the installed wheel: {probe}")
        t0 = time.monotonic()
        arm = classify(qemu, model, files, tmp_path, arm_env)
        arm_s = time.monotonic() - t0
        host_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        host = classify([sys.executable], model, files, tmp_path, host_env)

        stream = tmp_path / "stream.wav"
        step = max(1, len(files) // 8)
        spoken = write_stream(files[step // 2::step][:8], stream)  # 8 takes spread over the digits
        t0 = time.monotonic()
        arm_daemon = run_daemon(qemu, model, stream, tmp_path, arm_env)
        arm_daemon_s = time.monotonic() - t0
        host_daemon = run_daemon([sys.executable], model, stream, tmp_path, host_env)

    agree, rows, max_delta = 0, [], 0.0
    for f in files:
        a, h = arm.get(str(f), {}), host.get(str(f), {})
        same = "digit" in a and a.get("digit") == h.get("digit")
        agree += same
        if same:
            max_delta = max(max_delta, abs(a["confidence"] - h["confidence"]))
        rows.append({"file": f.name, "truth": digit_of(f), "aarch64": a.get("digit"), "x86_64": h.get("digit"),
                     "aarch64_confidence": a.get("confidence"), "x86_64_confidence": h.get("confidence")})
        if not same:
            log(f"MISMATCH {f.name}: aarch64 {a} vs {platform.machine()} {h}")
    correct = sum(r["aarch64"] == r["truth"] for r in rows)
    summary = {
        "files": len(files), "agree": agree, "aarch64_correct": correct, "max_confidence_delta": max_delta,
        "aarch64_classify_seconds": round(arm_s, 1), "setup_seconds": round(setup_s, 1),
        "onnxruntime": probe[2], "pins": pins, "model": str(model), "rows": rows,
        "daemon": {"spoken": spoken, "aarch64": arm_daemon, "x86_64": host_daemon,
                   "equal": arm_daemon == host_daemon, "aarch64_seconds": round(arm_daemon_s, 1)},
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"arm-check: {agree}/{len(files)} predictions equal on aarch64 (qemu) and {platform.machine()}; "
          f"aarch64 correct {correct}/{len(files)}; max |confidence delta| {max_delta:.4f}; "
          f"onnxruntime {probe[2]}; classify under qemu {arm_s:.1f} s, setup {setup_s:.1f} s")
    print(f"arm-check: daemon on a {len(spoken)}-word stream: aarch64 {arm_daemon}, {platform.machine()} "
          f"{host_daemon}, spoken {spoken}: {'equal' if arm_daemon == host_daemon else 'DIFFERENT'}")
    return 0 if agree == len(files) and arm_daemon == host_daemon and arm_daemon else 1


if __name__ == "__main__":
    sys.exit(main())
