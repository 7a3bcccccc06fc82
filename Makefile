# Two commands set everything up on a fresh machine (Python 3.11 and make are all it needs):
#   make course   virtual env + install + facades dataset, then JupyterLab on lessons/
#   make test     virtual env + install + facades dataset (offline), then every test and every lesson
# CPU-only machine? `make course TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the small CPU build.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
INSTALLED := $(VENV)/.installed

.PHONY: course test export install data-offline data browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Install once, again only when the dependencies change. torch first, on its own, so that the
# build chosen here (CPU or CUDA, via TORCH_INDEX) is the one the project then finds installed.
$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[course,test]"
	touch $(INSTALLED)

install: $(INSTALLED)

# On a learner's machine: a local copy when there is one (P2P_FACADES_SRC or ../shared/data/facades),
# otherwise the published archive, verified file by file.
data: install
	$(BIN)/p2p download facades --dest datasets/facades

# Tests and CI never download: only the local, verified copy.
data-offline: install
	$(BIN)/p2p download facades --dest datasets/facades --offline

# Jupyter refuses to run as root unless told to (containers often run as root).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)

course: data
	$(BIN)/jupyter lab $(ALLOW_ROOT) lessons/

# Lesson 08's browser test drives Debian's chromium (Playwright downloads no browser here). As root on a
# Debian-like machine without one, install it; otherwise say what to install (the test then skips, saying so).
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "browser: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: installing Debian's chromium"; \
	  apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	  echo "browser: could not install chromium; the browser test will be skipped"; \
	else echo "browser: no chromium; install Debian's chromium (apt-get install chromium) for the browser test"; fi

test: data-offline browser
	$(BIN)/python -m pytest

# Regenerate p2p_lib from the lessons (the lessons are the source of truth).
export: install
	$(BIN)/python tools/export_lessons.py
