# `make demo`: a private Mosquitto on a free loopback port, the daemon on the bundled recording in real
# time, and a subscriber printing digit, confidence and latency; then everything is shut down cleanly.
# It fails (non-zero) when the digits heard differ from the digits spoken (the recording's .txt file).
# The demo runs from the edge-only venv ($(EDGE_VENV)): the base install plus Mosquitto, no torch.
DEMO_INPUT ?= artifacts/samples/demo_digits.wav
DEMO_MODEL ?=
# Debian packages the demo needs: a venv, libsndfile for soundfile, and the broker.
DEMO_APT_PACKAGES := python3-venv libsndfile1 mosquitto

.PHONY: demo sysdeps-demo
sysdeps-demo:  ## install only the Debian packages `make demo` needs
	$(call apt_install,$(DEMO_APT_PACKAGES))

demo: venv-edge  ## the daemon on a bundled recording, a private Mosquitto, a subscriber printing each digit
	$(EDGE_PY) -m digitspot.edge.devtools.demo --input $(DEMO_INPUT) $(if $(DEMO_MODEL),--model $(DEMO_MODEL))
