# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Each builds .venv from this repository's own files on first use: the demo needs only the
# package itself, the tests also every extra they check against (torch, ONNX, Ray, Flower, …).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# NPGRU_REQUIRE: a test whose package (everything the test install brings) cannot be imported
# fails instead of being skipped, so a green run means the parity, backend, ONNX, accountant,
# Ray, Flower and notebook tests all ran.
REQUIRED := torch,numba,onnx,onnxruntime,dp_accounting,threadpoolctl,nbformat,nbclient,ipykernel,ray,flwr

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,torch,dev,ray,flower]"
	touch $@

demo: $(VENV)/.installed-run
	$(VENV)/bin/npgru federate --out runs/demo

test: $(VENV)/.installed-test
	NPGRU_REQUIRE=$(REQUIRED) $(PY) -m pytest -q

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed-test
	$(PY) benchmarks/bench_gru.py

clean:
	rm -rf $(VENV) .pytest_cache
