#!/usr/bin/env bash
# Builds an ASan+UBSan copy of torchinit_ext into build/sanitize, leaving the in-place build
# alone, and runs pytest against it. Usage: tests/sanitize.sh [pytest args...]
# Env: PY (the python), MAX_JOBS (parallel compiles), ASAN_OPTIONS / UBSAN_OPTIONS (appended to
# the defaults below, so they can override them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=build/sanitize

echo "== building the sanitized torchinit_ext into $OUT"
start=$(date +%s)
TORCHINIT_SANITIZE=1 "$PY" setup.py -q build_ext --build-lib "$OUT" --build-temp build/sanitize-tmp
echo "== sanitized build took $(( $(date +%s) - start )) s"
# The package's Python files beside the sanitized _C, so PYTHONPATH=$OUT imports this copy whole.
rm -f "$OUT"/torchinit_ext/*.py
cp torchinit_ext/*.py "$OUT"/torchinit_ext/

# python and torch are not instrumented, so the ASan runtime has to be loaded first (it must
# intercept malloc and operator new before anything allocates); libstdc++ beside it so that the
# C++ runtime is the compiler's, whatever torch's libraries would pull in first.
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
export LD_PRELOAD
# detect_leaks=0: python and torch keep allocations until exit by design. new_delete_type_mismatch
# and alloc_dealloc_mismatch stay on: torch 2.13's CPU wheel trips neither in this suite.
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
# No cwd on sys.path (it would import the in-place build), and the sanitized copy first.
export PYTHONSAFEPATH=1
export PYTHONPATH="$PWD/$OUT${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -c "import sys, torchinit_ext._C as c; print('== loaded', c.__file__); \
sys.exit(0 if '/$OUT/' in c.__file__ else 'error: not the sanitized build')"
start=$(date +%s)
status=0
# --capture=sys: a sanitizer report is written to fd 2 just before the process exits; pytest's
# default fd capture would swallow it.
# --import-mode=append: pytest puts the root (above the tests package) after PYTHONPATH, so that
# torchinit_ext is still the sanitized copy.
"$PY" -m pytest -q -p no:cacheprovider --capture=sys --import-mode=append "$@" || status=$?
echo "== sanitized pytest took $(( $(date +%s) - start )) s (exit $status)"
exit $status
