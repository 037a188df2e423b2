#!/usr/bin/env bash
# The project's test command (the README's, and what CI runs after installing):
#   1. the package is what nbdev_export makes of the notebooks,
#   2. README.md is what tools/sync_readme.py makes of nbs/index.ipynb,
#   3. every notebook runs under nbdev_test (IN_TEST=1: tiny presets),
#   4. the course website builds, and the pytest suite in tests/ passes (it checks the site in Chromium).
# Needs MNIST: set FNTI_DATA_DIR to a folder holding MNIST/raw/ (else it downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}

echo "== package in sync with notebooks"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp -r settings.ini nbs from_noise_to_images "$tmp"/
(cd "$tmp" && "$py" -c "from nbdev.doclinks import nbdev_export; nbdev_export()")
if ! diff -r -x __pycache__ from_noise_to_images "$tmp/from_noise_to_images"; then
  echo "The package differs from the notebooks: run nbdev_export and commit both." >&2; exit 1
fi

echo "== README in sync with nbs/index.ipynb"
"$py" tools/sync_readme.py --check

echo "== notebooks (nbdev_test)"
OMP_NUM_THREADS=1 nbdev_test --n_workers 2

echo "== course website (Jupyter Book, offline)"
"$py" tools/build_site.py >/dev/null

echo "== pytest"
"$py" -m pytest -q tests "$@"
