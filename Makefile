# deap-study: every target installs what it needs into .venv first (nothing by hand).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deap-installed

# torch/torchvision pins for the install step (pyproject keeps ranges). These builds lie on the
# workplace's local disk for Python 3.11; aarch64 uses the CPU build that exists there.
ifeq ($(shell uname -m),aarch64)
TORCH_PINS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
endif

# Study settings (override on the command line: make reproduce PRESET=paper DATA=/path/to/VeRi). OUT empty:
# results/ (and the README) for the cpu preset, the committed study; runs/PRESET/results for any other.
PRESET ?= cpu
DATASET ?= veri
DATA ?=
OUT ?=
FORCE ?= 0
PYTEST_ARGS ?=

.PHONY: help venv test reproduce reproduce-full lab bench readme docs clean-venv

help:
	@echo "make reproduce   run the study on the embedded default (installs first)"
	@echo "make test        run the test suite (installs first)"
	@echo "make lab         JupyterLab with the project kernel"
	@echo "make bench       speed/memory benchmarks"
	@echo "make docs        the documentation as HTML in docs/_build/html (Sphinx)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar off -q $(TORCH_PINS)
	$(PY) -m pip install --progress-bar off -q -e '.[dev]'
	@touch $@

venv: $(STAMP)

# One intra-op thread: the suite's tensors are tiny and OpenMP spinning on a shared 2-core box is slow.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(PYTEST_ARGS)

reproduce: $(STAMP)
	$(PY) -m deap_lib reproduce --preset $(PRESET) --dataset $(DATASET) $(if $(DATA),--data $(DATA),) $(if $(OUT),--out $(OUT),) $(if $(filter 1,$(FORCE)),--force,)

reproduce-full: $(STAMP)
	$(PY) -m deap_lib reproduce --full --preset $(PRESET) --dataset $(DATASET) $(if $(DATA),--data $(DATA),) $(if $(OUT),--out $(OUT),) $(if $(filter 1,$(FORCE)),--force,)

# JupyterLab at the repository root (notebooks/ and the executed ones in results/executed/ both reachable),
# new notebooks on the project's kernel; jupytext's contents manager (installed with jupytext) keeps every
# notebooks/NN_name.ipynb and its paired NN_name.py in sync on save. Jupyter refuses to start as root without
# --allow-root (containers and CI machines often run as root).
LAB_ARGS ?=
lab: $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name deap-study --display-name "deap-study (.venv)"
	$(VENV)/bin/jupyter lab --notebook-dir=. --MappingKernelManager.default_kernel_name=deap-study \
		$(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

readme: $(STAMP)
	$(PY) -m deap_lib readme

clean-venv:
	rm -rf $(VENV)

docs: $(STAMP)
	$(PY) -m sphinx -b html -W --keep-going docs docs/_build/html
