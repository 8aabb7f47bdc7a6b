#!/usr/bin/env bash
# The main job on the embedded default: install mover (in its own virtualenv), generate a
# sample volume image, back it up into a local encrypted repository, restore it, compare.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-256MiB}
venv=.venv-demo
echo "== installing mover into $venv (compiles the native core)"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q .
mover="$venv/bin/mover"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export MOVER_PASSWORD=${MOVER_PASSWORD:-demo-password}
export MOVER_REPOSITORY="$work/repo"
echo "== generating a $size sample image (text, binaries, compressed data, zeros)"
"$venv/bin/python" -m mover.sampledata --size "$size" "$work/sample.img"
echo "== mover init"
"$mover" init
echo "== mover backup"
"$mover" backup "$work/sample.img"
echo "== mover snapshots"
"$mover" snapshots
echo "== mover restore latest"
"$mover" restore latest "$work/restored.img"
echo "== mover check --read-data"
"$mover" check --read-data
cmp "$work/sample.img" "$work/restored.img"
echo "== restored image is bit-exact ($(stat -c %s "$work/restored.img") bytes)"
