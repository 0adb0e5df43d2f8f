#!/usr/bin/env bash
# The README's first command: install everything scfl needs on a fresh Debian 12 /
# Python 3.11 machine (system packages, a virtualenv in .venv, the ROS 2 interface
# package) and run the main job, `scfl demo`, on the embedded defaults.
#   scripts/setup.sh            install + run the demo
#   scripts/setup.sh --no-demo  install only (used by .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
run_demo=1
[[ "${1:-}" == "--no-demo" ]] && run_demo=0

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  pkgs=$(grep -v '^\s*#' scripts/apt-packages.txt | xargs)
  if ! dpkg -s $pkgs >/dev/null 2>&1; then
    echo "== installing system packages: $pkgs"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $pkgs
  fi
fi

py=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [[ ! -x .venv/bin/python ]]; then
  echo "== creating .venv with $py"
  "$py" -m venv .venv
fi
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip setuptools wheel
echo "== installing torch (CPU build) and Python dependencies"
$pip install -q torch==2.13.0
$pip install -q -r requirements.txt
$pip install -q --no-deps -e .

echo "== colcon build of the ROS 2 packages into ros_ws/ (scfl_nodes + scfl_interfaces, vendored tf2_msgs)"
bash scripts/build_ros.sh

if [[ $run_demo == 1 ]]; then
  echo "== running the main job: scfl demo"
  source scripts/env.sh
  scfl demo
fi
