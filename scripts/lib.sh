# Shared by scripts/test, scripts/demo and .ci/run (sourced, not executed).
#
# ensure_venv: create the project's virtualenv if needed and install the
# project into it (editable, with the test extra). Idempotent: a stamp records what was
# installed, so later runs take well under a second. Override the location with
# JUPYTER_CKPT_VENV and the interpreter with PYTHON.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JUPYTER_CKPT_VENV:-$ROOT/.venv}"

say() { printf '%s\n' "$*" >&2; }

# A Python >= 3.10 that can make virtualenvs: $PYTHON, then PATH, then pyenv's versions.
find_python() {
    local candidate
    for candidate in ${PYTHON:+"$PYTHON"} python3.11 python3.12 python3.13 python3.10 python3 \
            /root/.pyenv/versions/3.1[0-9]*/bin/python3 /usr/bin/python3; do
        if "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' \
                >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

_stamp() {
    # what the venv must match: the project's metadata and the interpreter
    { cat "$ROOT/pyproject.toml"; "$VENV/bin/python" -VV; echo "$ROOT"; } | sha256sum | cut -d' ' -f1
}

ensure_venv() {
    mkdir -p "$VENV"
    exec 9>"$VENV/.jupyter-ckpt-lock"  # concurrent runs must not pip-install together
    flock 9 2>/dev/null || true
    if [ ! -x "$VENV/bin/python" ]; then
        local python
        python="$(find_python)" || {
            say "error: no Python >= 3.10 with the venv module found (set PYTHON=/path/to/python3)"
            return 1
        }
        say "==> creating virtualenv $VENV with $python"
        "$python" -m venv "$VENV"
    fi
    if [ "$(cat "$VENV/.jupyter-ckpt-stamp" 2>/dev/null)" != "$(_stamp)" ] \
            || ! "$VENV/bin/python" -c 'import jupyter_ckpt, pytest' >/dev/null 2>&1; then
        say "==> installing jupyter-ckpt (editable) and its test dependencies into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]"
        _stamp >"$VENV/.jupyter-ckpt-stamp"
    fi
    exec 9>&-
}

# Best effort: extra packages that make the demo richer; missing ones are only a notice.
ensure_optional() {
    local pkg
    for pkg in "$@"; do
        "$VENV/bin/python" -c "import $pkg" >/dev/null 2>&1 && continue
        say "==> installing optional package $pkg"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$pkg" \
            || say "note: could not install $pkg; the demo runs without it"
    done
}
