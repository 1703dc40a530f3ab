#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install everything the
# project needs: Debian packages (when missing and we may install them), the pinned
# requirements.txt, and the package itself in editable mode.
#
#   bash launch/setup.sh          # idempotent; re-installs only when requirements change
#
# Environment: PYTHON (default python3.11, else python3), VENV (default .venv),
# AVSEP_NO_UV=1 (install with pip instead of uv).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
if [ -z "$PYTHON" ] || ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: no Python interpreter found (looked for python3.11, python3);" \
       "install Python >= 3.11 or set PYTHON=/path/to/python" >&2
  exit 1
fi

# Debian packages the project uses at run time. They are installed only when missing.
# libcairo2: CairoSVG renders the instrument pictures of synthetic_music with it.
DEBIAN_PACKAGES=(libcairo2)
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  DEBIAN_PACKAGES+=(python3-venv)
fi
missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=(); [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: Python >= 3.11 is required, found {sys.version.split()[0]} "
             "(set PYTHON=/path/to/python3.11)")
PY

stamp="$VENV/.avsep_jax_installed"
want=$(cat requirements.txt requirements-no-deps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "setup: installing pinned requirements into $VENV (a minute or two on a fresh machine)"
# uv resolves and downloads in parallel: ~20 s for requirements.txt from an empty
# cache against ~2 min for pip on 2 cores. pip stays the fallback (and runs `pip check`).
UV_VERSION=0.13.9
pip_quiet() {  # quiet, minus the notices some pip configurations print per package
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file" >&2)
}
if [ "${AVSEP_NO_UV:-0}" != 1 ] && pip_quiet install -q "uv==$UV_VERSION" && [ -x "$VENV/bin/uv" ]; then
  installer=("$VENV/bin/uv" pip install -q --python "$VENV/bin/python")
else
  echo "setup: installing with pip (uv unavailable or AVSEP_NO_UV=1)"
  installer=(pip_quiet install -q)
fi
"${installer[@]}" -r requirements.txt
"${installer[@]}" --no-deps -r requirements-no-deps.txt
"${installer[@]}" --no-deps -e .
# pip check, minus the one requirement requirements-no-deps.txt leaves out on purpose.
check=$("$VENV/bin/python" -m pip check 2>&1 || true)
problems=$(printf '%s\n' "$check" | grep -v -e "^No broken requirements" \
  -e "^tinysoundfont [0-9.]* requires pyaudio, which is not installed" -e '^$' || true)
if [ -n "$problems" ]; then
  printf 'setup: pip check found conflicts:\n%s\n' "$problems" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "setup: done"
