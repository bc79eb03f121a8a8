VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/xbar demo

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(PY) -m pytest -q -x --timeout=600 tests

bench: $(STAMP)
	@for b in benchmarks/[a-z]*.py; do m=$$(basename $$b .py); echo "== benchmarks.$$m" >&2; \
		$(PY) -m benchmarks.$$m $(BENCH_ARGS) || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check xbar tests benchmarks examples
	$(VENV)/bin/lint-imports --no-cache --no-logo

clean:
	rm -rf $(VENV) build *.egg-info
