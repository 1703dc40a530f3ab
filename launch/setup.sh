#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install everything the
# project needs: Debian packages (when missing and we may install them), the pinned
# requirements.txt, and the package itself in editable mode.
#
#   bash launch/setup.sh              # idempotent; re-installs only when requirements change
#   bash launch/setup.sh --with-beam  # also .venv-beam, the environment of Beam dataset builds
#   bash launch/setup.sh --tests      # what the tests need: .venv-beam and chromium (which
#                                     # renders the evaluation report in a test)
#
# .venv-beam holds everything .venv does, with apache-beam added and the packages it
# constrains re-pinned as requirements-beam.txt says (Beam caps protobuf and pillow below
# the versions requirements.txt pins, so the two cannot share one environment).
#
# Environment: PYTHON (default python3.11, else python3), VENV (default .venv),
# BEAM_VENV (default .venv-beam), AVSEP_NO_UV=1 (install with pip instead of uv).
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_BEAM=0
FOR_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --with-beam) WITH_BEAM=1 ;;
    --tests) WITH_BEAM=1; FOR_TESTS=1 ;;
    *) echo "setup: unknown argument '$arg' (usage: bash launch/setup.sh [--with-beam|--tests])" >&2
       exit 2 ;;
  esac
done
VENV=${VENV:-.venv}
BEAM_VENV=${BEAM_VENV:-.venv-beam}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
if [ -z "$PYTHON" ] || ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: no Python interpreter found (looked for python3.11, python3);" \
       "install Python >= 3.11 or set PYTHON=/path/to/python" >&2
  exit 1
fi

# Debian packages the project uses at run time. They are installed only when missing.
# libcairo2: CairoSVG renders the instrument pictures of synthetic_music with it.
DEBIAN_PACKAGES=(libcairo2)
if [ "$FOR_TESTS" = 1 ]; then
  DEBIAN_PACKAGES+=(chromium)  # a test renders the evaluation report in a headless browser
fi
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

UV_VERSION=0.13.9

# install_venv VENV REQUIREMENTS_FILE...: create or update one environment, then `pip check` it.
install_venv() {
  local venv=$1; shift
  local stamp="$venv/.avsep_jax_installed" want
  want=$(cat "$@" requirements-no-deps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup: $venv is up to date"
    return 0
  fi
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  echo "setup: installing pinned requirements into $venv (a minute or two on a fresh machine)"
  pip_quiet() {  # quiet, minus the notices some pip configurations print per package
    "$venv/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file" >&2)
  }
  # uv resolves and downloads in parallel: ~20 s for requirements.txt from an empty
  # cache against ~2 min for pip on 2 cores. pip stays the fallback (and runs `pip check`).
  local installer
  if [ "${AVSEP_NO_UV:-0}" != 1 ] && pip_quiet install -q "uv==$UV_VERSION" && [ -x "$venv/bin/uv" ]; then
    installer=("$venv/bin/uv" pip install -q --python "$venv/bin/python")
  else
    echo "setup: installing with pip (uv unavailable or AVSEP_NO_UV=1)"
    installer=(pip_quiet install -q)
  fi
  local requirement_args=()
  for file in "$@"; do requirement_args+=(-r "$file"); done
  "${installer[@]}" "${requirement_args[@]}"
  "${installer[@]}" --no-deps -r requirements-no-deps.txt
  "${installer[@]}" --no-deps -e .
  # pip check, minus the one requirement requirements-no-deps.txt leaves out on purpose.
  local check problems
  check=$("$venv/bin/python" -m pip check 2>&1 || true)
  problems=$(printf '%s\n' "$check" | grep -v -e "^No broken requirements" \
    -e "^tinysoundfont [0-9.]* requires pyaudio, which is not installed" -e '^$' || true)
  if [ -n "$problems" ]; then
    printf 'setup: pip check found conflicts in %s:\n%s\n' "$venv" "$problems" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
}

install_venv "$VENV" requirements.txt
if [ "$WITH_BEAM" = 1 ]; then
  # requirements.txt without the packages requirements-beam.txt re-pins (names compared
  # the way pip compares them: case-insensitive, '-', '_' and '.' alike).
  base=$(mktemp --suffix=.txt)
  trap 'rm -f "$base"' EXIT
  repinned=$(grep -oE '^[A-Za-z0-9][A-Za-z0-9._-]*' requirements-beam.txt | tr 'A-Z_.' 'a-z--')
  while IFS= read -r line; do
    name=$(printf '%s' "$line" | grep -oE '^[A-Za-z0-9][A-Za-z0-9._-]*' | tr 'A-Z_.' 'a-z--' || true)
    if [ -z "$name" ] || ! printf '%s\n' "$repinned" | grep -qxF "$name"; then
      printf '%s\n' "$line"
    fi
  done < requirements.txt > "$base"
  install_venv "$BEAM_VENV" "$base" requirements-beam.txt
fi
echo "setup: done"
