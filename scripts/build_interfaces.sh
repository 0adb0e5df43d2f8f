#!/usr/bin/env bash
# Generate and build the ROS 2 interface package `scfl_interfaces` from msg/, srv/ and action/ with the
# pip-installed ROS 2 tooling (ros-rosidl-* generators, ros-ament-cmake, colcon, system cmake).
#
#   scripts/build_interfaces.sh           build if msg/, srv/, action/ or the template changed (else ~0.1 s)
#   scripts/build_interfaces.sh --force   rebuild from scratch
#
# Result: ros_ws/install (colcon --merge-install); scripts/env.sh puts it on AMENT_PREFIX_PATH,
# PYTHONPATH and LD_LIBRARY_PATH. Why the sed step: the ros-* wheels were built in a manylinux
# container and their exported CMake files hard-code that container's Python paths
# (/opt/python/cp311-cp311/...); they are rewritten to this interpreter's include dir and
# site-packages (idempotent: only files still containing the old path are touched).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SCFL_VENV:-$root/.venv}"
py="$venv/bin/python"
ws="$root/ros_ws"
pkg_src="$ws/src/scfl_interfaces"
install="$ws/install"
stamp="$install/.scfl_interfaces.stamp"
force=0
[[ "${1:-}" == "--force" ]] && force=1

die() { echo "build_interfaces: error: $*" >&2; exit 1; }
[[ -x "$py" ]] || die "no Python at $py (run scripts/setup.sh first, or set SCFL_VENV)"
[[ -x "$venv/bin/colcon" ]] || die "colcon is not installed in $venv (pip install -r requirements.txt)"
command -v cmake >/dev/null || die "cmake not found (apt-get install cmake build-essential)"
shopt -s nullglob
msgs=("$root"/msg/*.msg)
srvs=("$root"/srv/*.srv)
actions=("$root"/action/*.action)
(( ${#msgs[@]} + ${#srvs[@]} + ${#actions[@]} > 0 )) || die "no interface files in $root/msg, $root/srv or $root/action"

pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
inc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
ws_site="$install/lib/python$pyver/site-packages"

# Everything the generated code depends on: skip the build when nothing changed.
digest=$( { cat "${msgs[@]}" "${srvs[@]}" "${actions[@]}" "$root"/interfaces/scfl_interfaces/CMakeLists.txt \
              "$root"/interfaces/scfl_interfaces/package.xml "${BASH_SOURCE[0]}";
            printf '%s\n' "${msgs[@]##*/}" "${srvs[@]##*/}" "${actions[@]##*/}" "$py" "$site" "$inc"; } | sha256sum | cut -d' ' -f1)

check_import() {
  SCFL_ROOT="$root" AMENT_PREFIX_PATH="$install:$venv" PYTHONPATH="$ws_site${PYTHONPATH:+:$PYTHONPATH}" \
  LD_LIBRARY_PATH="$install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$py" - <<'EOF'

from scfl_interfaces.msg import SkillWeights
from scfl_interfaces.srv import SkillRequest
from rclpy.serialization import serialize_message, deserialize_message
m = SkillWeights(skill_ids=["a"], weights=[0.5])
assert deserialize_message(serialize_message(m), SkillWeights).weights[0] == 0.5
SkillRequest.Request(task_description="x", max_skills=1)
import glob, os, importlib
for f in glob.glob(os.path.join(os.environ["SCFL_ROOT"], "action", "*.action")):
    name = os.path.basename(f)[:-len(".action")]
    action = getattr(importlib.import_module("scfl_interfaces.action"), name)
    action.Goal(), action.Result(), action.Feedback()
EOF
}

if [[ $force == 0 && -f "$stamp" && "$(cat "$stamp")" == "$digest" ]] && check_import 2>/dev/null; then
  echo "build_interfaces: scfl_interfaces is up to date ($install)"
  exit 0
fi

echo "build_interfaces: patching wheel CMake paths under $venv/share (-> $inc, $site)"
grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null \
  | xargs -0 -r sed -i \
      -e "s#/opt/python/cp311-cp311/include/python3\.11#$inc#g" \
      -e "s#/opt/python/cp311-cp311/lib/python3\.11/site-packages#$site#g" || true
if grep -rlq --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null; then
  die "wheel CMake files still reference /opt/python/cp311-cp311 (unexpected layout): $(grep -rl --include='*.cmake' /opt/python/cp311-cp311 "$venv/share" | head -3)"
fi

echo "build_interfaces: staging $pkg_src (${#msgs[@]} msg, ${#srvs[@]} srv, ${#actions[@]} action)"
rm -rf "$pkg_src"
mkdir -p "$pkg_src/msg" "$pkg_src/srv" "$pkg_src/action"
cp -p "$root"/interfaces/scfl_interfaces/CMakeLists.txt "$root"/interfaces/scfl_interfaces/package.xml "$pkg_src/"
(( ${#msgs[@]} )) && cp -p "${msgs[@]}" "$pkg_src/msg/"
(( ${#srvs[@]} )) && cp -p "${srvs[@]}" "$pkg_src/srv/"
(( ${#actions[@]} )) && cp -p "${actions[@]}" "$pkg_src/action/"
[[ $force == 1 ]] && rm -rf "$ws/build" "$install"
rm -f "$stamp"

echo "build_interfaces: colcon build (log: $ws/log/latest_build)"
start=$SECONDS
(
  cd "$ws"
  export PATH="$venv/bin:$PATH"
  export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
  unset PYTHONPATH
  colcon --log-base "$ws/log" build --merge-install \
    --base-paths "$ws/src" --build-base "$ws/build" --install-base "$install" \
    --cmake-force-configure --cmake-args -DPython3_EXECUTABLE="$py" -DPYTHON_EXECUTABLE="$py" -DBUILD_TESTING=OFF \
      -DCMAKE_BUILD_TYPE=Release -Wno-dev \
      "-DCMAKE_INSTALL_RPATH=\$ORIGIN;\$ORIGIN/../../.." -DCMAKE_BUILD_WITH_INSTALL_RPATH=OFF
) > "$ws/build.log" 2>&1 || { tail -40 "$ws/build.log" >&2; die "colcon build failed (full log: $ws/build.log)"; }

check_import || die "scfl_interfaces was built but does not import (see $ws/build.log)"
echo "$digest" > "$stamp"
echo "build_interfaces: built scfl_interfaces in $((SECONDS - start)) s -> $install"
