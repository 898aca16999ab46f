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

# NPGRU_REQUIRE: a test whose package (all in the test extra) cannot be imported fails instead
# of being skipped, so a green run means the parity, backend, ONNX, accountant and notebook
# tests ran. Only the heavy optional extras (ray, flower) may skip.
REQUIRED := torch,numba,onnx,onnxruntime,dp_accounting,threadpoolctl,nbformat,nbclient,ipykernel
test: $(STAMP)
	NPGRU_REQUIRE=$(REQUIRED) $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
