# `make bench`: every benchmark section and a report in BENCH_OUT (Markdown, JSON, figures); a full run then
# regenerates the figures in README.md and docs/ from that report (`make docs`), whatever its verdict.
# Full size by default (~12 min on the 2-core x86 dev machine: 300 words in real time, an hour of audio through the
# daemon twice, 2 min of real-time listening); exits non-zero when a gated target is missed.
# `make bench BENCH_SHORT=1` runs small counts in a couple of minutes (figures indicative only; report in
# runs/bench-short, which git ignores).
# Extra flags: `make bench BENCH_ARGS="--broker 192.168.1.5:1883 --snr-db 10"`; `python -m digitspot.benchmarks --help`.
BENCH_SHORT ?=
BENCH_ARGS ?=
BENCH_OUT ?= benchmarks/results

.PHONY: bench bench-short
bench: venv  ## run every benchmark (full size; BENCH_SHORT=1 for a quick pass); fails when a target is missed
	@status=0; $(PY) -m digitspot.benchmarks $(if $(BENCH_SHORT),--short --out-dir runs/bench-short,--out-dir $(BENCH_OUT)) \
	  $(BENCH_ARGS) || status=$$?; \
	$(if $(BENCH_SHORT),,$(PY) docs/generate.py || status=$$?;) exit $$status

bench-short: venv  ## the benchmarks in short mode (small counts, a couple of minutes)
	$(MAKE) bench BENCH_SHORT=1
