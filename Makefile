# Every target that needs the virtualenv creates it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLI := $(BIN)/restore-tool

.PHONY: setup demo test lint wheel restore db-fix-sequences verify bench sample-dump clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# First the problem: the battery-hub sample dump (explicit ids, lagging sequences) restored
# with a bare pg_restore, the application's next insert failing on a duplicate key,
# fix-sequences, the same insert going in (backups/demo.py). Then the whole pipeline into the
# embedded server: load, repair sequences, analyze, smoke test (with the example's configured
# rows), verify, checklist. Re-runnable (--replace).
demo: setup
	$(BIN)/python backups/demo.py "$$($(CLI) url --embedded --show-password)"
	$(CLI) restore backups/battery-hub.dump --embedded --replace --drop-old \
		--config restore-tool.example.toml $(ARGS)

# make restore DUMP=backups/x.dump [ARGS="--replace"]: into the configured target
restore: setup
	@test -n "$(DUMP)" || { echo "usage: make restore DUMP=path/to/dump [ARGS=...]"; exit 2; }
	$(CLI) restore $(DUMP) $(ARGS)

test: setup
	$(BIN)/pytest $(ARGS)

lint: setup
	$(BIN)/ruff check restore_tool tests bench backups
	$(BIN)/mypy

# Builds the wheel into dist/ and lists what it holds (every subpackage, py.typed)
wheel: setup
	rm -rf dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .
	$(BIN)/python -m zipfile -l dist/restore_tool-*.whl

# make db-fix-sequences ARGS="--schema billing --dry-run"; make verify ARGS="--json"
db-fix-sequences: setup
	$(CLI) fix-sequences $(ARGS)

verify: setup
	$(CLI) verify $(ARGS)

bench: setup
	$(BIN)/python bench/sequences.py
	$(BIN)/python bench/restore.py
	$(BIN)/python bench/smoke.py

# Rebuilds backups/battery-hub.dump from backups/battery-hub.sql
sample-dump: setup
	$(BIN)/python backups/build_sample.py

# Stops the embedded server first: deleting its directory under a running server would
# leave a postmaster serving files that are gone.
PIDFILE := .restore-tool/pgdata/postmaster.pid
clean:
	if [ -x $(CLI) ]; then $(CLI) embedded stop; \
	elif [ -f $(PIDFILE) ]; then pid=$$(head -n 1 $(PIDFILE)); kill -INT $$pid 2>/dev/null; \
		while kill -0 $$pid 2>/dev/null; do sleep 0.2; done; fi
	rm -rf $(VENV) .restore-tool dist build
