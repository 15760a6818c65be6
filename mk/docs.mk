# `make docs`: rewrite the generated sections of README.md and docs/ (between `<!-- generated: NAME -->` and
# `<!-- end generated -->`) from the model card, the newest benchmark report and the configuration dataclass.
# tests/test_docs.py fails when they disagree; `make docs-check` reports the same without changing anything.

.PHONY: docs docs-check
docs: venv  ## regenerate the figures and tables in README.md and docs/ from the card, the latest report, the settings
	$(PY) docs/generate.py

docs-check: venv  ## exit 1 if README.md or docs/ disagree with the card, the latest report or the settings
	$(PY) docs/generate.py --check
