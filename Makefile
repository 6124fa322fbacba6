# Two commands do all set-up on a fresh machine:
#   make demo   set up, then run the whole workflow on the embedded synthetic demo (CPU, minutes)
#   make test   set up, then run the test suite (what .ci/run calls)
# Set-up: Debian packages if missing (bedtools for pybedtools, libcurl headers for hic-straw, a headless
# Chromium for the report test), a venv in .venv with the CPU build of PyTorch, and this package with its
# test extras.

VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
CORES ?= 2
BIN := $(VENV)/bin
SMK := $(BIN)/snakemake
DEMO := --directory demo --configfile config/demo.yaml

.PHONY: setup demo test dryrun lint clean-demo
.DEFAULT_GOAL := demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@if ! command -v bedtools >/dev/null || ! [ -e /usr/include/curl/curl.h -o -e /usr/include/x86_64-linux-gnu/curl/curl.h -o -e /usr/include/aarch64-linux-gnu/curl/curl.h ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages: bedtools libcurl4-openssl-dev"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bedtools libcurl4-openssl-dev >/dev/null; \
	  else echo "please install bedtools and libcurl4-openssl-dev (or your system's libcurl headers)" >&2; exit 1; fi; \
	fi
	@if ! command -v chromium-headless-shell >/dev/null && ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium-headless-shell (the report test opens the report in it)"; \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null 2>&1 \
	      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null; }; } \
	      || echo "chromium-headless-shell could not be installed: the report test will be skipped"; \
	  else echo "no headless Chromium: the report test will be skipped"; fi; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	@# byte-code for this package once (pip compiles only what it copies): every workflow job imports it, and
	@# PYTHONDONTWRITEBYTECODE, where set, would have each one compile it again
	$(BIN)/python -m compileall -q src
	touch $@

demo: setup
	$(SMK) all $(DEMO) --cores $(CORES)

test: setup
	$(BIN)/python -m pytest -q

dryrun: setup
	$(SMK) -n --quiet rules all

lint: setup
	$(SMK) --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean-demo:
	rm -rf demo
