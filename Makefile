# Set-up and the two everyday jobs. `make demo` and `make test` each install what they need into .venv.
# TORCH selects the PyTorch build: the default pins a release; use e.g. `make demo TORCH=torch` for the
# newest build (with CUDA where pip finds it).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,export]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m pipeline demo --out demo_output

test: install
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/ruff format --check pipeline tests benchmarks
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_output
