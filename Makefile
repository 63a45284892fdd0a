# The two commands a newcomer needs:
#   make demo   set up the environment and run `deformconv demo` on the shipped data
#   make test   set up the environment and run the test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deformconv-installed
CSRC := $(shell find src/deformconv/backends/cpp/csrc -name "*.cpp" -o -name "*.h")

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

# Re-runs when the pinned requirements, the build files or the C++ sources change.
$(STAMP): requirements-dev.txt pyproject.toml setup.py $(CSRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

# The Triton kernels run in Triton's CPU interpreter, which must be chosen before Triton is first
# imported: their tests run in a process of their own (tests/conftest.py leaves them out otherwise).
test: lint
	$(VENV)/bin/python -m pytest -q
	TRITON_INTERPRET=1 $(VENV)/bin/python -m pytest -q tests/test_triton_kernels.py

demo: $(STAMP)
	$(VENV)/bin/deformconv demo $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/deformconv bench $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info src/deformconv/backends/cpp/*.so
