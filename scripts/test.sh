#!/usr/bin/env bash
# Installs the package with its test extras and runs the whole suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec python3 -m pytest -q -p no:cacheprovider "$@"
