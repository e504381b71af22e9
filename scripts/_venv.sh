# Sourced by the scripts in this folder: creates .venv on first use and
# installs the project into it with the extras named in $EXTRAS.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
# pip skips what is already installed, so a second run costs a few seconds.
stamp="$VENV/.installed-$(echo "$EXTRAS" | tr ',' '-')"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "installing synaptic-mesh[$EXTRAS] into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$EXTRAS]"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
