#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs the whole suite.
#   Debian packages: redis-server (the fixtures start their own on a free loopback port),
#   nginx-light (the reference proxy of the differential test, tests/test_dataplane_nginx.py),
#   prometheus (for promtool, used by the deploy/ checks), chromium + chromium-driver (the
#   status page's browser test) and postgresql (the data checks' tests start their own server on
#   a free loopback port, as the postgres user), when missing and we may install them;
#   gcc and Python's headers (the request path is compiled with mypyc);
#   Python: the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
# A C compiler and Python's headers: setup.py compiles the request path with mypyc (see below).
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' ||
  missing+=(python3-dev)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "note: missing ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}" >&2
  fi
fi

# Editable install without compiling (an editable install would not use the compiled modules),
# then compile the request path in place, as `pip install .` does: the tests run what ships.
# CUTOVER_REQUIRE_COMPILED turns setup.py's pure-Python fallback into a failure here.
CUTOVER_PURE_PYTHON=1 python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
CUTOVER_REQUIRE_COMPILED=1 python3 setup.py --quiet build_ext --inplace
export CUTOVER_REQUIRE_COMPILED=1
# The lint and type gates, on the package, its tests and the benchmark (versions pinned in the test extras).
python3 -m ruff check gateway tests bench setup.py
python3 -m ruff format --check gateway tests bench setup.py
python3 -m mypy gateway tests bench
exec python3 -m pytest -q -p no:cacheprovider "$@"
