# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Each builds .venv from this repository's own files on first use: the demo needs the package
# with Numba and matplotlib, the tests also every extra they check against (torch, ONNX, Ray, …).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# NPGRU_REQUIRE: a test whose package (everything the test install brings) cannot be imported
# fails instead of being skipped, so a green run means the parity, backend, ONNX, accountant,
# Ray, Flower and notebook tests all ran.
REQUIRED := torch,numba,onnx,onnxruntime,dp_accounting,threadpoolctl,nbformat,nbclient,ipykernel,ray,flwr,matplotlib,tqdm,build,hatchling

.PHONY: demo test lint typecheck docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# constraints.txt pins the exact CPU torch the parity tests check against (the `torch` extra is a
# range, which alone could pull a multi-GB CUDA build).
$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[fast,plots]"
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[fast,plots,test,torch,dev,docs,ray,flower]"
	touch $@

demo: $(VENV)/.installed-run
	$(VENV)/bin/npgru federate --out runs/demo

# what CI runs: the type check, the docs (warnings, broken links and references fail), the tests
test: $(VENV)/.installed-test typecheck docs
	NPGRU_REQUIRE=$(REQUIRED) $(PY) -m pytest -q

typecheck: $(VENV)/.installed-test
	$(VENV)/bin/mypy npgru

# NO_MKDOCS_2_WARNING: silences Material's banner about MkDocs 2 (not a warning of this build)
docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed-test
	$(PY) benchmarks/bench_gru.py

clean:
	rm -rf $(VENV) .pytest_cache site
