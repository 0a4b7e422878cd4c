# One-command set-up: `make run` and `make test` work on a fresh machine with only python3.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ROBOTICS_STAMP := $(VENV)/.installed-robotics

.PHONY: install run test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first (pinned; skipped when already importable) so that resolving the package
# never pulls an unpinned torch with its CUDA wheels.
$(STAMP): $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/hindsight train

# the tests also cover the optional extras (fetch_reach needs gymnasium-robotics); torch is
# already importable here, so this never resolves a torch of its own
$(ROBOTICS_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[dev,robotics]"
	touch $(ROBOTICS_STAMP)

test: install $(ROBOTICS_STAMP)
	$(PY) -m pytest -q

bench: install
	$(VENV)/bin/hindsight bench all --json bench-results.json

clean:
	rm -rf $(VENV) build *.egg-info
