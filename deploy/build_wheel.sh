#!/usr/bin/env bash
# Build the digitspot wheel (pure Python: edge, train, benchmarks) from the working tree into OUTDIR.
#
# Builds from a clean copy of the sources so a stale setuptools build/ directory can never leak
# deleted modules into the wheel, and so it never writes into the tree other people are editing.
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
for pkg in edge train benchmarks; do
  [ -d "$root/$pkg" ] && cp -r "$root/$pkg" "$work/"
done
find "$work" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$out"/digitspot-*.whl
"$python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$out" "$work" \
  > "$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
ls "$out"/digitspot-*.whl
