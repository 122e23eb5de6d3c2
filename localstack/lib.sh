# Sourced by the repository's scripts (localstack/*, infra/*, tests/*): progress lines with timings,
# and pinned Python-packaged tools in <repo>/.venv. Nothing here runs on its own.
#
#   timed LABEL CMD...          prints "LABEL ...", runs CMD, then "LABEL: done in 12.3 s"
#                               (or "LABEL: FAILED (exit N) after 12.3 s") and returns CMD's status
#   venv_ensure WHO DIST VER    installs DIST==VER into .venv unless that version is there already

LIB_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$LIB_REPO/.venv"
# cargo-lambda: `cargo lambda watch/invoke` (README) and the release builds (infra/build-release).
CARGO_LAMBDA_VERSION=1.9.2

now() { printf '%s\n' "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

timed() {
  local label=$1 start rc=0
  shift
  start=$(now)
  echo "$label ..."
  "$@" || rc=$?
  if [ "$rc" = 0 ]; then
    echo "$label: done in $(since "$start") s"
  else
    echo "$label: FAILED (exit $rc) after $(since "$start") s" >&2
  fi
  return "$rc"
}

venv_python() {
  [ -x "$VENV/bin/python" ] || timed "creating the Python venv $VENV" python3 -m venv "$VENV"
}

# The installed version of a distribution in .venv, or nothing.
venv_version() {
  "$VENV/bin/python" - "$1" <<'PY'
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
PY
}

venv_ensure() {
  local who=$1 dist=$2 version=$3 have
  venv_python
  have=$(venv_version "$dist")
  [ "$have" = "$version" ] && return 0
  # `python -m pip`, not .venv/bin/pip: a copied venv's scripts may point at another venv.
  timed "$who: installing $dist==$version into .venv${have:+ (found $have)}" \
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$dist==$version"
}
