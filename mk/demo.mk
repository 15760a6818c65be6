# Owned by the edge daemon work: `make demo`.
.PHONY: demo
demo: venv  ## classify the bundled sample recordings (becomes the daemon demo)
	$(VENV)/bin/digitspot-edge classify artifacts/samples/*.wav
