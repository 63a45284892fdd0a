# The two commands a newcomer needs:
#   make demo   set up the environment and run `deformconv demo` on the shipped data
#   make test   set up the environment and run the test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deformconv-installed
CSRC := $(shell find src/deformconv/backends/cpp/csrc -name "*.cpp" -o -name "*.h")

.PHONY: setup test lint format check-ext demo bench wheel test-compat clean

setup: $(STAMP)

# Re-runs when the pinned requirements, the build files or the C++ sources change.
$(STAMP): requirements-dev.txt pyproject.toml setup.py $(CSRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

LINTED := src tests benchmarks examples scripts README.md

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: $(STAMP)
	$(VENV)/bin/ruff format $(LINTED)
	$(VENV)/bin/ruff check --fix $(LINTED)

# The C++ backend must be the one that runs on CPU: a build that silently fell back to the
# reference would otherwise pass the suite with the C++ kernels untested.
check-ext: $(STAMP)
	$(PY) -c "import sys, deformconv; s = deformconv.backends().get('cpp', {}); \
	sys.exit(0 if s.get('available') else 'the C++ backend did not load: ' + str(s.get('reason')))"

# The Triton kernels run in Triton's CPU interpreter, which must be chosen before Triton is first
# imported: the conformance suite and the Triton-only tests run again in a process of their own
# (tests/conftest.py leaves tests/test_triton_*.py out otherwise). The interpreter runs one
# single-threaded program at a time, so that run is spread over two worker processes (pytest-xdist);
# the main run stays in one process, where PyTorch already uses both cores. pytest exits non-zero
# when a run collects no test.
test: lint check-ext
	$(PY) -m pytest -q
	TRITON_INTERPRET=1 $(PY) -m pytest -q -n 2 tests/test_conformance.py $(wildcard tests/test_triton_*.py)

demo: $(STAMP)
	$(VENV)/bin/deformconv demo $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/deformconv bench $(ARGS)

# One wheel for every torch >= 2.10 and CPython >= 3.10 (stable ABI, abi3), built with the pinned torch.
wheel: $(STAMP)
	rm -f dist/deformconv-*.whl
	$(PY) -m pip wheel --quiet --no-build-isolation --no-deps --wheel-dir dist .

# Installs that wheel, compiling nothing, into fresh environments with the newest torch on PyPI and
# the oldest that the stable ABI supports, and runs the op and kernel tests there (scripts/compat.sh).
test-compat: wheel
	bash scripts/compat.sh

clean:
	rm -rf $(VENV) build dist src/*.egg-info src/deformconv/backends/cpp/*.so
