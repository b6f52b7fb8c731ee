# imagewire: `make setup`, `make test`, `make demo`. Every target does its own set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test go-test demo protos lint bench clean

setup: $(STAMP)

# torch goes in first and on its own: on a machine without an NVIDIA GPU the pinned CPU build (a local wheel
# here) is what we want; leaving it to the dependency resolver would pull gigabytes of CUDA packages.
# The npm packages: the TypeScript client and the two examples that use it.
NPM_LOCKS := client/ts/package-lock.json examples/node/package-lock.json examples/web/package-lock.json

$(STAMP): pyproject.toml client/pyproject.toml $(NPM_LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install --quiet torch; \
	else \
		$(BIN)/pip install --quiet torch==2.13.0; \
	fi
	$(BIN)/pip install --quiet -e './client[cli]' -e '.[dev]'
	# Where npm exists: the TypeScript client (its prepare script builds it), then the Node example and the web
	# page that link to it (their install scripts are not needed: the page is bundled here).
	if command -v npm >/dev/null 2>&1; then \
		(cd client/ts && npm ci --no-audit --no-fund --silent) && \
		(cd examples/node && npm ci --ignore-scripts --no-audit --no-fund --silent) && \
		(cd examples/web && npm ci --ignore-scripts --no-audit --no-fund --silent && npm run --silent build); \
	fi
	touch $(STAMP)

# The Go client (client/go) builds offline from Debian's packages (go.mod replaces each module with its tree under
# /usr/share/gocode); pytest runs its tests against real servers (tests/test_go_client.py) where go is installed.
GO_ENV := GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local

# The suite runs in two pytest-xdist workers, a test file to each (a file's servers and packages stay shared by its
# tests): most tests wait on servers, proxies and browsers, so two share the CI machine's two cores well.
# `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The Go client's own checks alone: vet, and the tests that need no server (the rest skip outside pytest).
go-test:
	cd client/go && $(GO_ENV) go vet ./... && $(GO_ENV) go test ./...

demo: setup
	$(BIN)/python scripts/demo.py

protos: setup
	$(BIN)/python -m scripts.gen_protos

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/buf lint
	if git rev-parse --verify -q HEAD >/dev/null; then $(BIN)/buf breaking --against '.git#ref=HEAD'; fi

bench: setup
	$(BIN)/python -m bench --out-dir bench-results

clean:
	rm -rf $(VENV) build dist *.egg-info client/*.egg-info .pytest_cache .ruff_cache
	rm -rf client/ts/node_modules client/ts/dist examples/node/node_modules examples/web/node_modules examples/web/dist
