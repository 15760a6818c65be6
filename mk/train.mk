# `make train` produces the shipped artifacts/digitspot.onnx, its card and report.
# The synthetic voices need espeak-ng and flite (already in APT_PACKAGES; listed here as this fragment's own).
APT_PACKAGES += espeak-ng flite

TRAIN_CLI := $(VENV)/bin/digitspot-train
# `make train TRAIN_DEPS=` skips the venv check on a machine whose venv is already set up.
TRAIN_DEPS ?= venv
TRAIN_RUN ?= runs/official
LOSO_RUN ?= runs/loso
# torch CPU threads for `make train`. Two on an idle 2-core machine: a student step (batch 64) takes 86 ms on
# two threads vs 133 ms on one, the teacher's 63 vs 100 ms (channels-last), so the recipe's time budgets buy
# ~1.6x the epochs. On a machine shared with other jobs two OpenMP threads waiting on each other can run a
# step ~4x slower than one thread: use TRAIN_THREADS=1 there (the time budgets still hold).
TRAIN_THREADS ?= 2
# LOSO folds run at once, each its own process with LOSO_THREADS threads; the loso preset's time budget
# per fold assumes 2 single-threaded folds (six folds in three rounds within the hour on a 2-core machine).
LOSO_JOBS ?= 2
LOSO_THREADS ?= 1

.PHONY: train train-quick loso export evaluate-model
train: $(TRAIN_DEPS)  ## full recipe (FSDD official split + synthetic voices) -> artifacts/digitspot.onnx, card, report
	@mkdir -p $(TRAIN_RUN)
	set -o pipefail; time $(TRAIN_CLI) all --data-dir $(FSDD_DIR) \
	  --run-dir $(TRAIN_RUN) --out artifacts --loso-results $(LOSO_RUN)/loso.json --threads $(TRAIN_THREADS) \
	  --no-progress 2>&1 \
	  | tee $(TRAIN_RUN)/train.log

train-quick: $(TRAIN_DEPS)  ## every stage on a sliver of the data (~1 min), into runs/quick (not shipped)
	$(TRAIN_CLI) all --quick --data-dir $(FSDD_DIR) --run-dir runs/quick --out runs/quick/artifacts

loso: $(TRAIN_DEPS)  ## leave-one-speaker-out, six folds, LOSO_JOBS at once (preset loso), then refresh artifacts/report.md
	@mkdir -p $(LOSO_RUN)
	set -o pipefail; time $(TRAIN_CLI) loso --preset loso \
	  --data-dir $(FSDD_DIR) --run-dir $(LOSO_RUN) --threads $(LOSO_THREADS) --jobs $(LOSO_JOBS) --no-progress 2>&1 | tee $(LOSO_RUN)/loso.log
	$(TRAIN_CLI) evaluate --data-dir $(FSDD_DIR) --run-dir $(TRAIN_RUN) --out artifacts \
	  --loso-results $(LOSO_RUN)/loso.json --no-progress

export: $(TRAIN_DEPS)  ## re-export and re-quantize from the checkpoints of the last `make train`
	$(TRAIN_CLI) export --data-dir $(FSDD_DIR) --run-dir $(TRAIN_RUN) --out artifacts
	$(TRAIN_CLI) quantize --data-dir $(FSDD_DIR) --run-dir $(TRAIN_RUN) --out artifacts

evaluate-model: $(TRAIN_DEPS)  ## re-run the evaluation of the shipped model and rewrite artifacts/report.md
	$(TRAIN_CLI) evaluate --data-dir $(FSDD_DIR) --run-dir $(TRAIN_RUN) --out artifacts \
	  --loso-results $(LOSO_RUN)/loso.json
