#!/usr/bin/env bash
# Build the ROS 2 side of scfl with colcon, exactly as on a robot (docs/ros.md), into ros_ws/:
# this repository is one colcon package (scfl_nodes, ament_cmake; it also builds the interface
# package scfl_interfaces from msg/ srv/ action/), plus tf2_msgs and composition_interfaces from
# ../shared/vendor/ros2/interfaces when this Python has none (pip-only machines: no wheels exist).
#
#   scripts/build_ros.sh           build if anything the build reads changed (else ~1 s)
#   scripts/build_ros.sh --force   rebuild from scratch
#
# Uses the ROS 2 tooling of the virtualenv (ros-* wheels, colcon) or, when ROS is sourced
# ($ROS_DISTRO set and no .venv), the system's. Result: ros_ws/install (colcon --merge-install
# --symlink-install); scripts/env.sh puts it on AMENT_PREFIX_PATH, PYTHONPATH and LD_LIBRARY_PATH.
# Why the sed step: the ros-* wheels were built in a manylinux container and their exported CMake
# files hard-code that container's Python paths (/opt/python/cp311-cp311/...); they are rewritten
# to this interpreter's include dir and site-packages (idempotent).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SCFL_VENV:-$root/.venv}"
py="$venv/bin/python"
ws="$root/ros_ws"
install="$ws/install"
stamp="$install/.scfl_build.stamp"
vendor="${SCFL_VENDOR_ROS2:-$root/../shared/vendor/ros2}"
force=0
[[ "${1:-}" == "--force" ]] && force=1

die() { echo "build_ros: error: $*" >&2; exit 1; }
[[ -x "$py" ]] || die "no Python at $py (run scripts/setup.sh first, or set SCFL_VENV)"
[[ -x "$venv/bin/colcon" ]] || die "colcon is not installed in $venv (pip install -r requirements.txt)"
command -v cmake >/dev/null || die "cmake not found (apt-get install cmake build-essential)"

pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
inc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
ws_site="$install/lib/python$pyver/site-packages"

# Vendored interface packages this Python lacks (a full ROS install has both).
base_paths=("$root")
vendored=()
for pkg in tf2_msgs composition_interfaces; do
  if ! "$py" -c "import $pkg" 2>/dev/null || [[ -d "$install/share/$pkg" ]]; then
    # built before from a vendor dir that is not beside this checkout: keep that build
    [[ ! -d "$vendor/interfaces/$pkg" && -d "$install/share/$pkg" ]] && continue
    [[ -d "$vendor/interfaces/$pkg" ]] || die "$pkg is not installed and $vendor/interfaces/$pkg does not exist (set SCFL_VENDOR_ROS2 to shared/vendor/ros2)"
    base_paths+=("$vendor/interfaces/$pkg")
    vendored+=("$pkg")
  fi
done

# Everything the build reads: skip it when nothing changed (symlinked files update by themselves).
digest=$( { cd "$root"; cat package.xml CMakeLists.txt interfaces/scfl_interfaces/* "${BASH_SOURCE[0]}";
            shopt -s nullglob; for f in msg/*.msg srv/*.srv action/*.action; do echo "$f"; cat "$f"; done;
            find launch config urdf scfl_nodes scfl_cloud test/data/demo_bag -type f -not -name '*.pyc' | sort;
            printf '%s\n' "$py" "$site" "$inc" "${vendored[@]}"; } | sha256sum | cut -d' ' -f1)

check_import() {
  AMENT_PREFIX_PATH="$install:$venv" PYTHONPATH="$ws_site${PYTHONPATH:+:$PYTHONPATH}" \
  LD_LIBRARY_PATH="$install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$py" - "${vendored[@]}" <<'EOF2'
import importlib, sys
from scfl_interfaces.msg import SkillWeights
from scfl_interfaces.srv import SkillRequest
from rclpy.serialization import serialize_message, deserialize_message
from ament_index_python.packages import get_package_share_directory, get_package_prefix
m = SkillWeights(skill_ids=["a"], weights=[0.5])
assert deserialize_message(serialize_message(m), SkillWeights).weights[0] == 0.5
SkillRequest.Request(task_description="x", max_skills=1)
get_package_share_directory("scfl_nodes"), get_package_prefix("scfl_interfaces")
for name in sys.argv[1:]:
    importlib.import_module(name)
EOF2
}

if [[ $force == 0 && -f "$stamp" && "$(cat "$stamp")" == "$digest" ]] && check_import 2>/dev/null; then
  echo "build_ros: ros_ws is up to date ($install)"
  exit 0
fi

echo "build_ros: patching wheel CMake paths under $venv/share (-> $inc, $site)"
grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null \
  | xargs -0 -r sed -i \
      -e "s#/opt/python/cp311-cp311/include/python3\.11#$inc#g" \
      -e "s#/opt/python/cp311-cp311/lib/python3\.11/site-packages#$site#g" || true
if grep -rlq --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null; then
  die "wheel CMake files still reference /opt/python/cp311-cp311 (unexpected layout): $(grep -rl --include='*.cmake' /opt/python/cp311-cp311 "$venv/share" | head -3)"
fi

[[ $force == 1 ]] && rm -rf "$ws/build" "$install"
rm -rf "$ws/src"  # layout of older versions of this script (staged copies of msg/ srv/)
rm -f "$stamp" "$install/.scfl_interfaces.stamp"
mkdir -p "$ws"
echo "build_ros: colcon build scfl_nodes (+ scfl_interfaces)${vendored:+ and vendored ${vendored[*]}} (log: $ws/build.log)"
start=$SECONDS
(
  cd "$ws"
  export PATH="$venv/bin:$PATH"
  export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
  unset PYTHONPATH
  colcon --log-base "$ws/log" build --merge-install --symlink-install \
    --base-paths "${base_paths[@]}" --build-base "$ws/build" --install-base "$install" \
    --cmake-args -DPython3_EXECUTABLE="$py" -DPYTHON_EXECUTABLE="$py" -DBUILD_TESTING=OFF \
      -DCMAKE_BUILD_TYPE=Release -Wno-dev
) > "$ws/build.log" 2>&1 || { tail -40 "$ws/build.log" >&2; die "colcon build failed (full log: $ws/build.log)"; }

check_import || die "the build finished but scfl_interfaces / the ament index do not work (see $ws/build.log)"
echo "$digest" > "$stamp"
echo "build_ros: built in $((SECONDS - start)) s -> $install"
