# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo test venv clean fuzz

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]' > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	@$(BIN)/python -c "import metacompress, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/metacompress demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Continuous fuzzing of the .mcz/.mcza decoders (issue 15); FUZZ_SEED=N for another run.  Crashing or
# hanging inputs land in tests/fuzz_corpus/, which `make test` replays.
fuzz: $(STAMP)
	$(BIN)/python tests/fuzz_harness.py --inputs 100000 --seed $${FUZZ_SEED:-1} --save-crashes --json $(VENV)/fuzz-report.json

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache demo-output runs
