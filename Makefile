# Two entry points, each complete on a fresh machine from a clean clone:
#   make demo   installs into .venv and classifies the bundled example scans
#   make test   installs into .venv (with the test extras) and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned to the build this project is tested with; pyproject only declares ranges,
# so an existing CUDA torch in a user's own environment is kept.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# The demo model c2p-demo ships inside the package (trained by `make demo-model` on depth maps of
# the 13 `c2p synth` shape classes; not CLIP, useless for real objects), so the demo runs offline.
# Real CLIP weights need one download through open_clip:
#   make demo MODEL=ViT-B-32
MODEL ?= c2p-demo
# empty: the model's default weights (c2p-demo's shipped ones, OpenAI's for ViT-B-32)
PRETRAINED ?=
LABELS ?= cube,sphere,cylinder,cone,torus,pyramid,capsule,ring,table,chair,mug,bowl,bottle
DEMO_WEIGHTS ?= c2p_cli/weights/c2p-demo.safetensors

.PHONY: demo demo-model test install install-dev system-deps clean

system-deps:
	@# open3d (the `mesh` extra, part of `dev`) links libusb-1.0 (Debian package libusb-1.0-0);
	@# the core install (make install / make demo) does not need it.
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	  else echo "open3d needs libusb-1.0: install the Debian/Ubuntu package libusb-1.0-0 (sudo apt-get install libusb-1.0-0)"; fi; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e ".[onnx]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[onnx,dev]"
	touch $@

install: $(VENV)/.installed
install-dev: system-deps $(VENV)/.installed-dev

demo: install
	$(BIN)/c2p classify examples/scans --labels $(LABELS) \
	  --model $(MODEL) $(if $(PRETRAINED),--pretrained $(PRETRAINED)) --output demo_results.csv --overwrite
	$(BIN)/python examples/check_demo.py demo_results.csv
	$(BIN)/c2p render examples/scans/torus.off --views 6 --output demo_views.png

# Train c2p-demo again (seeded; 22 minutes on 2 cores) and write the shipped weights. Needed
# whenever the renderer changes: tests/models/test_demo_model.py fails until then.
demo-model: install
	$(BIN)/python -m tools.train_demo_model --out $(DEMO_WEIGHTS)

test: install-dev
	$(BIN)/python -m pytest -q --timeout 900

clean:
	rm -rf $(VENV) demo_results.csv demo_views.png
