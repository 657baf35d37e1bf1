#!/usr/bin/env bash
# Development build: compiles pyaiml._C into build/dev and copies it next to the sources, so
# `PYTHONPATH=. pytest` runs against the working tree. Users install with `pip install .`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$($PY -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
  -DPython_EXECUTABLE="$(command -v $PY)" "$@" >/dev/null
cmake --build build/dev -j2
# A new file renamed over the old one, not a copy into it: a process that has the old module
# loaded (a server, a benchmark) keeps its mapping instead of crashing on the rewritten pages.
for so in build/dev/_C*.so; do
  cp "$so" "pyaiml/.$(basename "$so").tmp"
  mv -f "pyaiml/.$(basename "$so").tmp" "pyaiml/$(basename "$so")"
done
