# digitspot: every job a user or CI runs, from a fresh Debian / Raspberry Pi OS machine.
# `make demo` and `make test` install what they need (apt packages and a venv), idempotently.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The edge-only venv: the base install (the Pi's) and nothing else, for `make demo`; no torch in it.
EDGE_VENV ?= .venv-edge
EDGE_PY := $(EDGE_VENV)/bin/python
FSDD_DIR ?= $(abspath ../shared/data/fsdd/recordings)
export FSDD_DIR

# Debian packages the whole project needs (tests, training, deployment); fragments in mk/ add theirs.
# `make demo` installs only its own short list (DEMO_APT_PACKAGES in mk/demo.mk).
APT_PACKAGES := python3-venv libsndfile1 portaudio19-dev mosquitto mosquitto-clients espeak-ng flite sox wamerican

# $(call apt_install,PACKAGES): apt-get only what is missing, so a re-run is quick and needs no network.
define apt_install
@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
if [ -n "$$missing" ]; then \
  echo "installing Debian packages: $$missing"; \
  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
fi
endef

-include mk/*.mk

.PHONY: help sysdeps venv venv-edge test lint data train clean
help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

sysdeps:  ## install the Debian packages (as root, or with sudo)
	$(call apt_install,$(APT_PACKAGES))

$(VENV)/.installed: pyproject.toml | sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch==2.13.0 first and on its own: it is the local CPU build; any other pin pulls CUDA.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[train,dev,mic]'
	@touch $@

venv: sysdeps $(VENV)/.installed  ## create the venv with every extra (edge, train, dev, mic)

# The base dependencies only (onnxruntime, numpy, webrtcvad, paho-mqtt, click, soundfile, soxr), editable.
$(EDGE_VENV)/.installed: pyproject.toml | sysdeps-demo
	@test -x $(EDGE_PY) || $(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_PY) -m pip install -q -e .
	@touch $@

venv-edge: sysdeps-demo $(EDGE_VENV)/.installed  ## create the edge-only venv (the Pi's install: no torch)

test: venv  ## the whole test suite, as CI runs it
	$(PY) -m pytest -q tests

lint: venv  ## ruff over the code
	$(VENV)/bin/ruff check edge train benchmarks tests

data:  ## fetch FSDD v1.0.10 into data/fsdd (for users without a copy)
	@if [ -d data/fsdd/recordings ]; then echo "data/fsdd already there"; else \
	  git clone --depth 1 --branch v1.0.10 https://github.com/Jakobovski/free-spoken-digit-dataset.git data/fsdd; \
	fi
	@echo "use FSDD_DIR=$(abspath data/fsdd/recordings)"

clean:  ## remove the venvs and caches (not the shipped artifact)
	rm -rf $(VENV) $(EDGE_VENV) .pytest_cache build *.egg-info
