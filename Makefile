# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Each builds .venv from this repository's own files on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,torch,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/npgru federate --out runs/demo

# NPGRU_REQUIRE=torch,numba: a parity or backend test that cannot import them fails
# instead of being skipped, so a green run means they ran.
test: $(STAMP)
	NPGRU_REQUIRE=torch,numba $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
