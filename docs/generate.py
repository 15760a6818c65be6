"""Regenerate the sections of README.md and docs/ that carry figures, so prose cannot drift from data.

Each generated section sits between two marker comments and is rewritten whole:

    <!-- generated: model-figures -->
    ...
    <!-- end generated -->

Sources: the shipped model's card (``artifacts/digitspot.onnx.json`` and its FP32 sibling), the newest
benchmark report (``benchmarks/results/*.json``, by the report's own date), and the daemon's settings
table (``digitspot.edge.config.settings_markdown()``). ``make docs`` runs this; ``--check`` changes
nothing and exits 1 naming the files that are out of date (tests/test_docs.py does the same in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "artifacts" / "digitspot.onnx.json"
FP32_CARD = ROOT / "artifacts" / "digitspot-fp32.onnx.json"
RESULTS = ROOT / "benchmarks" / "results"

WIDTH = 105  # the README's and docs' line length
MARKER = re.compile(r"<!-- generated: (?P<name>[a-z0-9-]+) -->\n(?P<body>.*?)<!-- end generated -->", re.DOTALL)


class DocsError(Exception):
    """A source or a marker is missing: the message says which and what to do."""


# -- sources ------------------------------------------------------------------------------------------

def load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DocsError(f"{path} not found: run `make train` (model card) or `make bench` (report)") from exc


def _report_time(report: dict[str, Any]) -> datetime:
    return datetime.strptime(report["date"], "%Y-%m-%d %H:%M UTC")


def newest_report(results: Path = RESULTS) -> tuple[Path, dict[str, Any]]:
    """The most recent benchmark report (by the date it records, not the file's mtime)."""
    reports = []
    for path in sorted(results.glob("*.json")):
        data = load_json(path)
        if "targets" in data and "date" in data:
            reports.append((_report_time(data), path.name, path, data))
    if not reports:
        raise DocsError(f"no benchmark report in {results}: run `make bench`")
    _, _, path, data = max(reports)
    return path, data


# -- formatting ---------------------------------------------------------------------------------------

def pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def kb(size_bytes: int) -> str:
    return f"{size_bytes / 1024:.0f} KB"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def number(value: float, unit: str) -> str:
    """A measured or threshold value as the benchmark report shows it (1 decimal for %, x, points)."""
    if unit in ("%", "points", "x"):
        text = f"{value:.1f}"
    elif 0 < abs(value) < 0.01:
        text = f"{value:.5f}".rstrip("0").rstrip(".")
    else:
        text = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{text} {unit}".strip()


def prose(text: str) -> str:
    """A generated paragraph wrapped like the hand-written ones."""
    return textwrap.fill(text, width=WIDTH, break_long_words=False, break_on_hyphens=False)


def short_ms(value: float) -> str:
    """A headline latency: whole milliseconds from 10 ms up, two decimals below."""
    return f"{value:.0f} ms" if value >= 10 else f"{value:.2f} ms"


def target_text(metrics: dict[str, Any], key: str) -> str:
    """The card's target for a metric, with whether it is met ('' when the card sets none)."""
    target = metrics.get("targets", {}).get(key)
    if not target:
        return ""
    return f">= {pct(target['minimum'])}" + ("" if target["met"] else " (**not met**)")


# -- sections -----------------------------------------------------------------------------------------

def readme_model_figures(card: dict[str, Any]) -> str:
    m = card["metrics"]
    folds = m.get("loso_folds_int8", {})
    rows = [
        (f"FSDD official test takes ({m['test_files']}, speakers seen in training)", pct(m["official_accuracy_int8"]),
         target_text(m, "official_accuracy_int8")),
    ]
    if "loso_mean_accuracy_int8" in m:
        spread = f" (folds {min(folds.values()) * 100:.1f}-{pct(max(folds.values()))})" if folds else ""
        rows.append((f"a speaker never heard in training (mean of {len(folds)} folds)",
                     pct(m["loso_mean_accuracy_int8"]) + spread, target_text(m, "loso_mean_accuracy_int8")))
    rows.append(("test takes pitched up 500 cents (a higher voice)", pct(m["pitch_+500c_accuracy_int8"]),
                 target_text(m, "pitch_+500c_accuracy_int8")))
    rows.append(("test takes in white / pink noise at 5 dB SNR",
                 f"{pct(m['white_5db_accuracy_int8'])} / {pct(m['pink_5db_accuracy_int8'])}",
                 target_text(m, "white_5db_accuracy_int8")))
    lines = [
        prose(f"The shipped model (`{card['name']}`, INT8 ONNX, {kb(card['file_size_bytes'])}, "
              f"{card['parameter_count']:,} parameters of which {card['nonzero_parameter_count']:,} non-zero), "
              "measured through the daemon's own classifier:"),
        "",
        "| accuracy on | measured | target |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def model_figures(card: dict[str, Any], fp32_card: dict[str, Any] | None) -> str:
    m = card["metrics"]
    rows: list[tuple[str, str, str]] = [
        (f"FSDD official split, {m['test_files']} test takes", target_text(m, "official_accuracy_int8"),
         (f"{pct(m['official_accuracy_int8'])} (FP32 {pct(m['official_accuracy_fp32'])}, "
          f"pruned FP32 {pct(m['official_accuracy_pruned'])})")),
    ]
    if "loso_mean_accuracy_int8" in m:
        folds = m.get("loso_folds_int8", {})
        rows.append((f"leave-one-speaker-out, mean of {len(folds)} folds", target_text(m, "loso_mean_accuracy_int8"),
                     (f"{pct(m['loso_mean_accuracy_int8'])} (folds {min(folds.values()) * 100:.1f}-"
                      f"{pct(max(folds.values()))}; FP32 {pct(m['loso_mean_accuracy_fp32'])})")))
    rows.append(("test takes pitch-shifted +300 / +500 / +700 cents", target_text(m, "pitch_+500c_accuracy_int8")
                 .replace(">=", "+500: >="),
                 " / ".join(pct(m[f"pitch_+{c}c_accuracy_int8"]) for c in (300, 500, 700))))
    for colour in ("white", "pink"):
        rows.append((f"{colour} noise 10 / 5 / 0 dB SNR", target_text(m, f"{colour}_5db_accuracy_int8")
                     .replace(">=", "5 dB: >="),
                     " / ".join(pct(m[f"{colour}_{d}db_accuracy_int8"]) for d in (10, 5, 0))))
    rows.append(("parameters (non-zero after pruning)", "",
                 f"{card['parameter_count']:,} ({card['nonzero_parameter_count']:,})"))
    size = kb(card["file_size_bytes"])
    if fp32_card:
        size += f" (FP32 ONNX {kb(fp32_card['file_size_bytes'])})"
    rows.append(("INT8 ONNX file", "", size))
    rows.append(("ONNX FP32 vs PyTorch, max logit difference", "<= 1e-4",
                 f"{m['parity_onnx_fp32_vs_torch_max_abs']:.1e}"))
    rows.append(("INT8 vs FP32, same top-1 on the test windows", "", pct(m["int8_vs_fp32_top1_agreement"])))
    seconds = card.get("training", {}).get("stage_seconds", {}).get("total")
    if seconds:
        loso = f"; `make loso` {minutes(m['loso_seconds'])}" if m.get("loso_seconds") else ""
        rows.append(("`make train` wall time", "", f"{minutes(seconds)}{loso}"))
    lines = [
        prose(f"From the card `artifacts/{CARD.name}` (exported {card['created_at'][:10]}, sha256 "
              f"{card['sha256'][:12]}...). Every accuracy is the INT8 model run through "
              "`digitspot.edge.classifier.OnnxDigitClassifier`, the daemon's own code path."),
        "",
        "| metric | target | measured |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def _report_links(path: Path, prefix: str) -> str:
    md = path.with_suffix(".md").name
    return f"[`benchmarks/results/{md}`]({prefix}benchmarks/results/{md})"


def _target_row(t: dict[str, Any]) -> str:
    if t.get("skipped"):
        result = f"skipped ({t['skipped']})"
    elif t.get("passed") is None:
        result = "**not measured**"
    elif t["passed"]:
        result = "pass" + ("" if t.get("gated", True) else " (not gated here)")
    else:
        result = "**FAIL**" if t.get("gated", True) else "miss (not gated on this machine)"
    measured = "n/a" if t.get("measured") is None else number(t["measured"], t["unit"])
    return (f"| {t['target']} | {t['op']} {number(t['threshold'], t['unit'])} | {measured} | "
            f"{t.get('spread') or ''} | {result} |")


def _model_note(report: dict[str, Any], card: dict[str, Any]) -> str:
    sha = report.get("model", {}).get("sha256", "")
    if sha == card["sha256"]:
        return f"the shipped model (sha256 {sha[:12]}...)"
    return f"model sha256 {sha[:12]}..., **not** the shipped model ({card['sha256'][:12]}...): run `make bench`"


def bench_figures(path: Path, report: dict[str, Any], card: dict[str, Any]) -> str:
    mach = report["machine"]
    verdict = "PASS" if report.get("passed") else "FAIL"
    lines = [
        prose(f"Latest report: {_report_links(path, '../')}, {report['date']}, {report['mode']} mode, verdict "
              f"**{verdict}**; {_model_note(report, card)}. Machine **{mach['host']}**: {mach['cpu_model']} "
              f"({mach['architecture']}), {mach['logical_cores']} cores, {mach['os']}, Python {mach['python']}, "
              f"onnxruntime {mach['versions'].get('onnxruntime')}."
              + (f" The run took {minutes(report['wall_s'])}." if report.get("wall_s") else "")),
        "",
        "| target | threshold | measured | spread | result |",
        "|---|---|---|---|---|",
    ]
    lines += [_target_row(t) for t in report["targets"]]
    return "\n".join(lines)


def readme_bench_headline(path: Path, report: dict[str, Any]) -> str:
    by_id = {t["id"]: t for t in report["targets"]}

    def measured(key: str) -> str:
        t = by_id.get(key)
        if not t or t.get("measured") is None:
            return "n/a"
        return short_ms(t["measured"]) if t["unit"] == "ms" else f"{t['measured']:.0f} {t['unit']}"

    mach = report["machine"]
    return prose(f"On the latest benchmark ({mach['host']}, {mach['cpu_model']}, {mach['logical_cores']} cores, "
            f"{report['date'][:10]}): end of speech to an MQTT subscriber p50 {measured('e2e_p50')}, "
            f"p95 {measured('e2e_p95')}; INT8 inference p99 {measured('inference_p99')}; daemon peak memory "
            f"{measured('peak_rss')}. Every target and figure: [docs/bench.md](docs/bench.md) and "
            f"{_report_links(path, '')}.")


def settings_table() -> str:
    try:
        from digitspot.edge.config import settings_markdown
    except ImportError as exc:
        raise DocsError("digitspot.edge.config.settings_markdown() is missing: the settings table is generated "
                        f"from the config dataclass ({exc})") from exc
    return settings_markdown().strip()


# -- the files and their sections ---------------------------------------------------------------------

def section_renderers() -> dict[str, dict[str, Callable[[], str]]]:
    """file (relative to the repository) -> section name -> renderer. Sources are read lazily, once."""
    cache: dict[str, Any] = {}

    def card() -> dict[str, Any]:
        if "card" not in cache:
            cache["card"] = load_json(CARD)
        return cache["card"]

    def fp32() -> dict[str, Any] | None:
        return load_json(FP32_CARD) if FP32_CARD.is_file() else None

    def report() -> tuple[Path, dict[str, Any]]:
        if "report" not in cache:
            cache["report"] = newest_report()
        return cache["report"]

    return {
        "README.md": {
            "model-figures": lambda: readme_model_figures(card()),
            "bench-headline": lambda: readme_bench_headline(*report()),
        },
        "docs/model.md": {"model-figures": lambda: model_figures(card(), fp32())},
        "docs/bench.md": {"bench-figures": lambda: bench_figures(*report(), card())},
        "docs/configuration.md": {"settings": settings_table},
    }


def regenerate(text: str, renderers: dict[str, Callable[[], str]], where: str) -> str:
    """``text`` with every marked section rewritten; every renderer's section must be present."""
    found = {m.group("name") for m in MARKER.finditer(text)}
    missing = sorted(set(renderers) - found)
    if missing:
        raise DocsError(f"{where} has no <!-- generated: {missing[0]} --> ... <!-- end generated --> section")
    unknown = sorted(found - set(renderers))
    if unknown:
        raise DocsError(f"{where}: no generator for the section {unknown[0]!r} (docs/generate.py)")

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        return f"<!-- generated: {name} -->\n{renderers[name]().rstrip()}\n<!-- end generated -->"

    return MARKER.sub(replace, text)


def expected_files(root: Path = ROOT, only: set[str] | None = None) -> dict[Path, tuple[str, str]]:
    """path -> (current text, regenerated text) for every file with generated sections."""
    out = {}
    for rel, renderers in section_renderers().items():
        if only is not None and rel not in only:
            continue
        path = root / rel
        text = path.read_text(encoding="utf-8")
        out[path] = (text, regenerate(text, renderers, rel))
    return out


def write_atomic(path: Path, text: str) -> None:
    """Temporary file + rename: an interrupted run never leaves half a README."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(path.stat().st_mode & 0o777)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree whose README.md and docs/ to rewrite")
    parser.add_argument("files", nargs="*", help="only these files (relative to --root)  [default: all]")
    args = parser.parse_args(argv)
    try:
        files = expected_files(args.root, set(args.files) if args.files else None)
    except (DocsError, OSError) as exc:
        print(f"docs: error: {exc}", file=sys.stderr)
        return 2
    stale = [path for path, (old, new) in files.items() if old != new]
    for path in stale:
        rel = path.relative_to(args.root)
        if args.check:
            print(f"docs: {rel} is out of date: run `make docs`", file=sys.stderr)
        else:
            write_atomic(path, files[path][1])
            print(f"docs: rewrote {rel}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
