#!/usr/bin/env bash
# Compatibility check of the built wheel across torch releases, compiling nothing.
#
# Installs the wheel that `make wheel` put in dist/ into fresh virtual environments, one per line
# "PYTHON-VERSION TORCH-REQUIREMENT" of COMPAT_MATRIX, with binary packages only, runs the operator
# and kernel tests there, and fails unless the C++ backend is the CPU default in each. Ends with a
# table (torch x Python, C++ backend loaded, tests) and the time taken.
#
# The default matrix: the newest torch on PyPI with Python 3.12, and the oldest torch that the
# stable ABI supports (2.10) with the oldest supported Python (3.10). The first run downloads
# several GB (PyPI's Linux torch wheels bring CUDA libraries); later runs reuse pip's cache.
#
# Usage: scripts/compat.sh [WHEEL]
#   COMPAT_MATRIX  lines "python-version torch-requirement" (default below)
#   COMPAT_DIR     where the environments go (default: /tmp/deformconv-compat)
#   COMPAT_TESTS   the test files to run (default below)
set -euo pipefail

cd "$(dirname "$0")/.."
MATRIX=${COMPAT_MATRIX:-"3.12 torch
3.10 torch==2.10.*"}
DIR=${COMPAT_DIR:-/tmp/deformconv-compat}
TESTS=${COMPAT_TESTS:-"tests/test_cpu_kernels.py tests/test_build.py tests/test_conformance.py tests/test_msda.py tests/test_dcnv3.py tests/test_dcnv4.py"}
WHEEL=${1:-$(ls -t dist/deformconv-*.whl 2>/dev/null | head -n 1)}
if [ -z "$WHEEL" ] || [ ! -f "$WHEEL" ]; then
    echo "compat: no wheel in dist/; run \`make wheel\` first" >&2
    exit 2
fi
# The machine-wide pip configuration may pin torch to an older release: the point here is the
# newest one, so these installs read no pip configuration file.
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset DEFORMCONV_NO_EXT DEFORMCONV_BACKEND

# An interpreter of Python $1 ("3.12"): on the PATH, else one that pyenv installed.
python_for() {
    local candidate
    for candidate in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/"python$1"; do
        if "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$1'.split('.'))))" \
            >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

start=$SECONDS
failed=0
rows=()
while read -r version requirement; do
    [ -n "$version" ] || continue
    python=$(python_for "$version") || { echo "compat: no Python $version here" >&2; failed=1; continue; }
    venv="$DIR/py$version-$(echo "$requirement" | tr -c 'A-Za-z0-9.\n' '_')"
    echo "== Python $version, $requirement: $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # What the selected tests import besides torch and the package.
    "$venv/bin/pip" install --quiet --only-binary=:all: "$requirement" pytest hypothesis numpy
    "$venv/bin/pip" install --quiet --only-binary=:all: "$WHEEL"
    # The tests must exercise the installed wheel's binary, with the C++ backend as the CPU default.
    if backend=$("$venv/bin/python" - <<'PY'
import sys

import torch

import deformconv
from deformconv.backends import cpp

state = deformconv.backends()["cpp"]
if "site-packages" not in deformconv.__file__:
    sys.exit(f"deformconv imported from {deformconv.__file__}, not from the installed wheel")
if not state["available"] or "cpu" not in state["default_for"]:
    sys.exit(f"the C++ backend is not the CPU default: {state}")
build = cpp.build_info()
print(f"torch {torch.__version__}|{sys.version.split()[0]}|yes ({build['abi']} ABI, built with torch {build['torch_build']})")
PY
    ); then
        summary=$("$venv/bin/python" -m pytest -q -p no:cacheprovider $TESTS 2>&1 | tee "$venv/pytest.log" | tail -n 1) \
            || failed=1
        rows+=("$backend|$summary")
    else
        failed=1
        rows+=("$requirement|$version|no|not run")
    fi
done <<< "$MATRIX"

echo
echo "| torch | Python | C++ backend loaded | tests |"
echo "|---|---|---|---|"
for row in "${rows[@]}"; do
    echo "| ${row//|/ | } |"
done
echo "compat: $(basename "$WHEEL"), $((SECONDS - start)) s"
exit $failed
