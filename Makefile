# Every target that needs the virtualenv creates it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLI := $(BIN)/restore-tool

.PHONY: setup demo test lint db-fix-sequences verify bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# Loads the battery-hub sample (explicit ids, lagging sequences) into the embedded server,
# then repairs and verifies it.
demo: setup
	$(CLI) psql --embedded -- -q -f backups/battery-hub.sql
	$(CLI) verify --embedded || true
	$(CLI) fix-sequences --embedded
	$(CLI) verify --embedded

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check restore_tool tests bench
	$(BIN)/mypy

db-fix-sequences: setup
	$(CLI) fix-sequences

verify: setup
	$(CLI) verify

bench: setup
	$(BIN)/python bench/sequences.py

clean:
	rm -rf $(VENV) .restore-tool
