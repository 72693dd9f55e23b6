# Two commands on a fresh clone: `make demo` and `make test`. Every target (re)creates .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-fast lint bench serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	@mkdir -p demo_out
	$(BIN)/distillwatch score --events data_samples/events.jsonl --out demo_out/scores.jsonl
	$(BIN)/distillwatch evaluate --events data_samples/events.jsonl --labels data_samples/labels.jsonl --out demo_out/eval
	@echo "demo outputs in demo_out/: scores.jsonl (one line per account), eval/metrics.json"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/read_events.py
	$(BIN)/python benchmarks/embedding.py
	$(BIN)/python benchmarks/scoring.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/fleets.py
	$(BIN)/python benchmarks/serve_load.py

serve: $(STAMP)
	$(BIN)/distillwatch serve

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
