# imagewire: `make setup`, `make test`, `make demo`. Every target does its own set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo protos lint bench clean

setup: $(STAMP)

# torch goes in first and on its own: on a machine without an NVIDIA GPU the pinned CPU build (a local wheel
# here) is what we want; leaving it to the dependency resolver would pull gigabytes of CUDA packages.
$(STAMP): pyproject.toml client/pyproject.toml examples/node/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install --quiet torch; \
	else \
		$(BIN)/pip install --quiet torch==2.13.0; \
	fi
	$(BIN)/pip install --quiet -e ./client -e '.[dev]'
	# The Node.js example client (tested against the real servers) where npm exists.
	if command -v npm >/dev/null 2>&1; then cd examples/node && npm ci --no-audit --no-fund --silent; fi
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/python scripts/demo.py

protos: setup
	$(BIN)/python -m scripts.gen_protos

lint: setup
	$(BIN)/ruff check .
	$(BIN)/buf lint
	if git rev-parse --verify -q HEAD >/dev/null; then $(BIN)/buf breaking --against '.git#ref=HEAD'; fi

bench: setup
	$(BIN)/python -m bench.caption_bench
	$(BIN)/python -m bench.animate_bench
	$(BIN)/python -m bench.fleet_bench

clean:
	rm -rf $(VENV) build dist *.egg-info client/*.egg-info .pytest_cache .ruff_cache
