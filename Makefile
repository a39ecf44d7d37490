# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install geot, run the end-to-end demo on synthetic jaws
#   make test   - create .venv, install geot, run the test suite (what CI runs)
# The install is CPU-first: torch 2.13.0 (CPU build), then torch-cluster compiled against it.
# For a GPU install see README.md ("Installing on a GPU machine").

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.geot-installed
TORCH  ?= torch==2.13.0
export MAX_JOBS ?= 2

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel ninja
	$(BIN)/python -m pip install --quiet "$(TORCH)" numpy
	# torch-cluster ships no wheels: it compiles against the torch above (about 15 min cold, seconds from pip's cache).
	$(BIN)/python -m pip install --no-build-isolation "torch-cluster==1.6.3"
	# open3d needs the system libusb; install it where we can (root + apt), geot works without open3d.
	-(command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && (dpkg -s libusb-1.0-0 >/dev/null 2>&1 || \
	  (apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libusb-1.0-0))))
	# geot report's browser tests drive Debian's headless chromium; install it where we can, they skip without.
	-(command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && (command -v chromium >/dev/null || \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium))))
	$(BIN)/python -m pip install --quiet -e ".[dev,o3d]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/geot demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python tools/benchmark.py

clean:
	rm -rf $(VENV) runs .pytest_cache
