#!/usr/bin/env bash
# Build the digitspot wheel from the working tree into OUTDIR: every module under the `digitspot`
# namespace (edge, train, benchmarks) and the shipped INT8 model and card (digitspot.artifacts), so a
# device runs `digitspot-edge` and `python -m digitspot.benchmarks` from its venv alone.
#
# Builds from a clean copy of the sources so a stale setuptools build/ directory can never leak
# deleted modules into the wheel, and so it never writes into the tree other people are editing.
# Also writes OUTDIR/constraints.txt (dependency pins). The same sources give the same bytes, so
# re-deploying an unchanged tree changes nothing.
# Usage: deploy/build_wheel.sh OUTDIR [PYTHON]   -> prints the wheel's path
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "$1" && cd "$1" && pwd)"
python="${2:-$root/.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for f in pyproject.toml README.md LICENSE; do
  [ -e "$root/$f" ] && cp "$root/$f" "$work/"
done
# pyproject.toml's package-data decides what of artifacts/ goes in (the INT8 model and its card).
for pkg in edge train benchmarks artifacts; do
  [ -d "$root/$pkg" ] && cp -r "$root/$pkg" "$work/"
done
find "$work" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$out"/digitspot-*.whl "$out"/benchmarks.tar.gz
# SOURCE_DATE_EPOCH: fixed zip timestamps, so the same sources give the same wheel (and re-deploys change nothing).
SOURCE_DATE_EPOCH=315532800 "$python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$out" "$work" \
  > "$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
wheel="$(ls "$out"/digitspot-*.whl)"
# constraints.txt: the edge runtime's dependencies (base + mic extra) at the versions installed in this
# venv, i.e. the versions the tests and `make arm-check` ran; the Pi installs exactly these.
"$python" - "$wheel" > "$out/constraints.txt" <<'PY'
import re, sys, zipfile
from importlib import metadata
with zipfile.ZipFile(sys.argv[1]) as zf:
    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    lines = zf.read(meta).decode().splitlines()
print("# the edge runtime's dependencies at the versions verified on the workstation (deploy/build_wheel.sh)")
for line in lines:
    if not line.startswith("Requires-Dist:"):
        continue
    spec, _, marker = line.split(":", 1)[1].partition(";")
    if marker and 'extra == "mic"' not in marker:
        continue
    name = re.match(r"\s*([A-Za-z0-9_.-]+)", spec).group(1)
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
PY
echo "$wheel"
