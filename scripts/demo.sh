#!/usr/bin/env bash
# The main job on the embedded default: install mover (in its own virtualenv), generate a
# sample volume image, back it up into a local encrypted repository, restore it, compare.
# Each step prints its time, and the steps that move the image their rate in MiB/s.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-256MiB}
venv=.venv-demo

now() { date +%s.%N; }

# A step's wall time, and its rate over `bytes` when given: "  3.2 s, 80.0 MiB/s".
report() { # began bytes
    awk -v began="$1" -v ended="$(now)" -v bytes="${2:-0}" 'BEGIN {
        s = ended - began
        if (bytes > 0 && s > 0) printf "   %.1f s, %.1f MiB/s\n", s, bytes / 1048576 / s
        else printf "   %.1f s\n", s
    }'
}

# The virtualenv is reused while it was built from the sources as they are now: the stamp is
# a hash of every file that goes into the installed package (git's list of them, which leaves
# out what a build generates; without git, every file there but compiled ones).
sources=(pyproject.toml setup.py ext mover agent/mover_k8s agent/chart/crds)
list_sources() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard -- "${sources[@]}"
    else
        find "${sources[@]}" -type f -not -path '*/__pycache__/*' -not -name '*.so' -print0
    fi
}
stamp=$(list_sources | sort -z | xargs -0 sha256sum 2>/dev/null | sha256sum | cut -c1-16)
began=$(now)
if [[ -x "$venv/bin/mover" && "$(cat "$venv/.mover-stamp" 2>/dev/null)" == "$stamp" ]]; then
    echo "== reusing $venv (installed from these sources)"
else
    echo "== installing mover into $venv (compiles the native core; about a minute)"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q .
    echo "$stamp" >"$venv/.mover-stamp"
fi
report "$began"
mover="$venv/bin/mover"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export MOVER_PASSWORD=${MOVER_PASSWORD:-demo-password}
export MOVER_REPOSITORY="$work/repo"

echo "== generating a $size sample image (text, binaries, compressed data, zeros)"
began=$(now)
"$venv/bin/python" -m mover.tools.sampledata --size "$size" "$work/sample.img"
bytes=$(stat -c %s "$work/sample.img")
report "$began"

echo "== mover init"
began=$(now)
"$mover" init
report "$began"

echo "== mover backup"
began=$(now)
"$mover" backup "$work/sample.img"
report "$began" "$bytes"

echo "== mover snapshots"
"$mover" snapshots

echo "== mover restore latest"
began=$(now)
"$mover" restore latest "$work/restored.img"
report "$began" "$bytes"

echo "== mover check --read-data"
began=$(now)
"$mover" check --read-data
report "$began"

cmp "$work/sample.img" "$work/restored.img"
echo "== restored image is bit-exact ($bytes bytes)"
