#!/usr/bin/env bash
# The release check (`make release-check`, the last stage of .ci/run): does the package a user would
# install work, with nothing from this checkout on the import path?
#
#   1 build     python -m build: the sdist, then the wheel built FROM that sdist (so a file missing
#               from the sdist shows up as a broken wheel), into a temporary folder
#   2 twine     twine check on both (metadata, the README renders as the long description)
#   3 assets    every file [tool.setuptools.package-data] names (tim/assets/*.safetensors|json, the
#               YAML presets ...) is inside the wheel, and there is at least one asset
#   4 venv      a fresh virtual environment: torch (CPU build), then the wheel with the [dev] extra
#               (the extras the tests exercise, as `make venv` installs them); `tim --help` runs there
#   5 tests     the fast suite, copied out of the checkout, run by that environment's Python
#               against the INSTALLED package: tim.__file__ must lie in its site-packages
#               (checked by the pytest plugin written below, before any test runs)
#
# What the tests see (step 5): the tracked files of the repository except src/ (README.md, Makefile,
# docs/, configs/, scripts/ ... which some tests read), copied to $WORK/repo; src/tim there is a link
# to the INSTALLED package, so the source-reading tests (layer rules, docs pages) check what was
# shipped; ../shared (the spec files some tests read) is linked beside it when this checkout has it.
# The fast suite runs in full, with -x (stop at the first failure: the point is a yes/no on the
# wheel) and without the cache provider (nothing is written into the copied tree).
#
# Environment: PYTHON (interpreter for the fresh venv, default python3), DEV_PYTHON (has build +
# twine, default .venv/bin/python), TORCH / TORCH_INDEX (as in the Makefile), KEEP=1 keeps $WORK,
# RELEASE_PYTEST_ARGS (extra pytest arguments, e.g. `tests/cli` for a quick local look; CI sets none).
#
# Measured (2026-12-02, 2 cores shared with five other jobs, load average ~14): build 30 s, twine 2 s,
# venv 349 s, tests 2,061 s (1,040 passed), 2,443 s in all; the fast suite alone takes ~3-5 min on a
# quiet machine, so expect ~10 min there.
set -euo pipefail
# the whole script is one function, so bash has read all of it before running any of it (editing the
# file during a run cannot change what runs)
main() {
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-python3}
DEV_PYTHON=${DEV_PYTHON:-.venv/bin/python}
TORCH=${TORCH:-torch==2.13.0}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}

fail() {
    echo "release-check: error: $1; $2" >&2
    exit 1
}
[ -x "$DEV_PYTHON" ] || fail "$DEV_PYTHON is missing" "run make venv first (it installs build and twine)"
"$DEV_PYTHON" -c 'import build, twine' 2>/dev/null ||
    fail "build or twine is not installed in $DEV_PYTHON" 'pip install -e ".[dev]" (or make venv)'

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tim-release.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "release-check: keeping $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi

TIMINGS=""
step() { # step NAME: prints a header and records the time since the previous step
    if [ -n "${STEP:-}" ]; then TIMINGS="${TIMINGS}$(printf '  %-8s %5d s' "$STEP" $((SECONDS - STEP_START)))"$'\n'; fi
    STEP=$1
    STEP_START=$SECONDS
    [ "$1" = done ] || echo "--- release-check: $1"
}

step build
"$DEV_PYTHON" -m build --outdir "$WORK/dist" "$REPO" >"$WORK/build.log" 2>&1 ||
    { tail -n 30 "$WORK/build.log" >&2; fail "python -m build failed (log above)" "fix the packaging error it names"; }
WHEEL=$(ls "$WORK"/dist/*.whl)
SDIST=$(ls "$WORK"/dist/*.tar.gz)
echo "built $(basename "$WHEEL") and $(basename "$SDIST")"

step twine
"$DEV_PYTHON" -m twine check --strict "$WHEEL" "$SDIST"

step assets
"$DEV_PYTHON" - "$WHEEL" "$REPO" <<'EOF'
import sys
import tomllib
import zipfile
from pathlib import Path

wheel, repo = sys.argv[1], Path(sys.argv[2])
# every file that [tool.setuptools.package-data] promises (the shipped assets, presets ...)
patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tim"]
src = repo / "src"
shipped = sorted(str(p.relative_to(src)) for pattern in patterns for p in (src / "tim").glob(pattern))
names = set(zipfile.ZipFile(wheel).namelist())
missing = [name for name in shipped if name not in names]
if not any(name.startswith("tim/assets/") for name in shipped) or missing:
    sys.exit(f"release-check: error: package data missing from the wheel: {missing or 'no tim/assets files'}; "
             "check [tool.setuptools.package-data] in pyproject.toml")
print(f"{len(shipped)} package-data file(s) in the wheel: {', '.join(shipped)}")
EOF

step venv
"$PYTHON" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
# torch first, alone, from the CPU index (--no-deps: only torch is looked up there), as `make venv` does;
# --retries 1: where that index cannot be reached pip falls back to PyPI / local wheels sooner
# --no-compile: no .pyc for the ~2 GB installed (minutes of CPU on 2 cores); imports compile what they use
"$VPY" -m pip install --quiet --no-compile --retries 1 --no-deps "$TORCH" --extra-index-url "$TORCH_INDEX"
"$VPY" -m pip install --quiet --no-compile "$TORCH" "${WHEEL}[dev]"
(cd "$WORK" && PATH="$WORK/venv/bin:$PATH" tim --help >/dev/null) || fail "tim --help failed in the fresh venv" "run it there to see why"
echo "tim --help runs from $WORK/venv"

step tests
mkdir -p "$WORK/repo"
# the working tree's files as git sees them (tracked + untracked, not ignored: what the wheel was built
# from), minus src/; a tracked file deleted in the working tree is skipped
git -C "$REPO" ls-files -z --cached --others --exclude-standard | "$DEV_PYTHON" -c '
import shutil, sys
from pathlib import Path
repo, dest = Path(sys.argv[1]), Path(sys.argv[2])
for name in sorted(set(sys.stdin.read().split("\0")) - {""}):
    if not name.startswith("src/") and (repo / name).is_file():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, dest / name)
' "$REPO" "$WORK/repo"
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$WORK/repo/src"
ln -s "$SITE/tim" "$WORK/repo/src/tim"
if [ -d "$REPO/../shared" ]; then ln -s "$(cd "$REPO/../shared" && pwd)" "$WORK/shared"; fi
mkdir -p "$WORK/plugins"
cat >"$WORK/plugins/installed_tim.py" <<'EOF'
"""Refuse to run the tests unless `tim` is the installed wheel (not a source tree on sys.path)."""

import sysconfig
from pathlib import Path

import pytest


def pytest_sessionstart(session):
    import tim

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(tim.__file__).resolve()
    if site not in where.parents:
        pytest.exit(f"tim was imported from {where}, not from the installed wheel in {site}", returncode=3)
    print(f"release-check: tim {tim.__version__} from {where.parent}")
EOF
(
    cd "$WORK/repo"
    PATH="$WORK/venv/bin:$PATH" PYTHONPATH="$WORK/plugins" \
        "$VPY" -m pytest -q -x -p no:cacheprovider -p installed_tim ${RELEASE_PYTEST_ARGS:-}
)

step done
printf 'release-check: passed\n%s' "$TIMINGS"
}

main "$@"
