"""The README and docs/ say what the card, the newest benchmark report and the settings say.

Every figure-carrying section is regenerated in memory by docs/generate.py (what `make docs` runs) and
compared with the file; a difference means the prose drifted from the data: run `make docs`. The
docs must also be free of the history of their own making, which belongs in CHANGELOG.md and git.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _load_generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


@pytest.mark.parametrize("rel", ["README.md", "docs/model.md", "docs/bench.md", "docs/configuration.md"])
def test_generated_sections_match_their_sources(rel: str):
    (_path, (current, expected)), = generate.expected_files(only={rel}).items()
    if current != expected:
        diff = [f"- {a}\n+ {b}" for a, b in zip(current.splitlines(), expected.splitlines(), strict=False) if a != b]
        pytest.fail(f"{rel} disagrees with its sources: run `make docs`\n" + "\n".join(diff[:8]))


def test_the_newest_report_is_chosen_by_its_own_date(tmp_path: Path):
    newest = {"date": "2026-01-02 08:00 UTC", "targets": []}
    (tmp_path / "zz-host-2026-01-01.json").write_text(json.dumps({"date": "2026-01-01 23:59 UTC", "targets": []}))
    (tmp_path / "aa-host-2026-01-02.json").write_text(json.dumps(newest))
    (tmp_path / "not-a-report.json").write_text(json.dumps({"something": "else"}))
    path, report = generate.newest_report(tmp_path)
    assert path.name == "aa-host-2026-01-02.json"
    assert report == newest


def test_the_model_figures_are_the_cards():
    """Golden figures: the shipped card's headline numbers appear, formatted, in the README section."""
    card = json.loads(generate.CARD.read_text())
    m = card["metrics"]
    text = generate.readme_model_figures(card)
    assert f"| {m['official_accuracy_int8'] * 100:.1f}% |" in text
    assert f"{m['loso_mean_accuracy_int8'] * 100:.1f}%" in text
    assert f"{card['parameter_count']:,} parameters" in text
    met = m["targets"]["official_accuracy_int8"]["met"]
    official_row = next(line for line in text.splitlines() if line.startswith("| FSDD official"))
    assert ("(**not met**)" in official_row) is (not met)


def test_a_report_on_another_model_says_so():
    card = {"sha256": "a" * 64}
    assert "the shipped model" in generate._model_note({"model": {"sha256": "a" * 64}}, card)
    assert "**not** the shipped model" in generate._model_note({"model": {"sha256": "b" * 64}}, card)


def test_a_missing_section_is_named():
    with pytest.raises(generate.DocsError, match="model-figures"):
        generate.regenerate("no markers here\n", {"model-figures": lambda: "x"}, "README.md")
    text = "<!-- generated: model-figures -->\nold\n<!-- end generated -->\n"
    assert generate.regenerate(text, {"model-figures": lambda: "new"}, "README.md") == text.replace("old", "new")


def test_check_mode_changes_nothing_and_make_docs_repairs(tmp_path: Path):
    """`make docs-check` exits 1 on a stale file and leaves it; `make docs` rewrites it (on a copy here)."""
    readme = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text()
    stale = original.replace("<!-- generated: model-figures -->\n", "<!-- generated: model-figures -->\nstale\n")
    readme.write_text(stale)
    assert generate.main(["--check", "--root", str(tmp_path), "README.md"]) == 1
    assert readme.read_text() == stale
    assert generate.main(["--root", str(tmp_path), "README.md"]) == 0
    assert "stale" not in readme.read_text()
    assert generate.main(["--check", "--root", str(tmp_path), "README.md"]) == 0


# -- no history in the docs -------------------------------------------------------------------------

HISTORY = [
    r"\bissue \d+", r"\bthis run\b", r"\bthis session\b", r"\bsession \d+", r"\bsessions \d", r"tried after",
    r"not kept", r"\binterim model\b", r"\bowned by\b", r"\bwas \d", r"\(was ",
    r"\bruns? of `?make train`?\b.*\b(gave|scored)\b", r"\bover (two|three|four|five|six|seven|eight|\d+) `?make",
]
DOC_FILES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_record_no_history(path: Path):
    text = path.read_text()
    found = [(pattern, m.group(0)) for pattern in HISTORY for m in re.finditer(pattern, text, re.IGNORECASE)]
    assert not found, f"{path.relative_to(ROOT)} records history (move it to CHANGELOG.md): {found}"


def test_readme_is_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to {target}, which does not exist"
