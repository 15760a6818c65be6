# Owned by the edge daemon work: `make demo`.
# A private Mosquitto on a free loopback port, the daemon on the bundled recording in real time, and a
# subscriber printing digit, confidence and latency; then everything is shut down cleanly.
DEMO_INPUT ?= artifacts/samples/demo_digits.wav
DEMO_MODEL ?=

.PHONY: demo
demo: venv  ## the daemon on a bundled recording, a private Mosquitto, a subscriber printing each digit
	$(PY) -m digitspot.edge.devtools.demo --input $(DEMO_INPUT) $(if $(DEMO_MODEL),--model $(DEMO_MODEL))
