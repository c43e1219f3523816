# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo serve clean

install: $(STAMP)

# Re-installs only when the package metadata changes; a second `make install` does nothing.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install --quiet "torch>=2.4" "torchvision>=0.19"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest

# The whole product on the built-in shapes set: train (2-5 minutes on 2 CPU cores), then
# measure it on the validation split and draw a sample sheet. The generators and evaluate.py
# find checkpoints/demo/ on their own.
DEMO_DIR := checkpoints/demo

demo: install
	$(PY) train.py --preset shapes --output-dir $(DEMO_DIR) --overwrite --no-sample-every-epoch
	$(PY) evaluate.py --checkpoint $(DEMO_DIR) --sheet $(DEMO_DIR)/sample_sheet.png

# The web demo on 127.0.0.1:7860 (checkpoints/, else the demo's checkpoints/demo/, as the CLIs find it);
# more flags with SERVE_FLAGS="--port 8080 --device cpu".
serve: install
	$(PY) app.py $(SERVE_FLAGS)

clean:
	rm -rf $(VENV) checkpoints
