# Source this to use scfl from the repository: activates .venv and puts the generated
# ROS 2 interface package (built by scripts/build_interfaces.sh into ros_ws/install) on the paths.
_scfl_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$_scfl_root/.venv/bin/activate"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# ROS 2: the colcon workspace ros_ws/install (scripts/build_ros.sh, --merge-install: scfl_nodes,
# scfl_interfaces, vendored tf2_msgs) on top of the ros-* wheels in .venv. Idempotent: sourcing twice does not grow the paths.
_scfl_ws="$_scfl_root/ros_ws/install"
_scfl_pyver="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
_scfl_prepend() {  # _scfl_prepend VAR DIR: put DIR first in VAR unless it is already there
  local cur="${!1:-}"
  case ":$cur:" in *":$2:"*) ;; *) export "$1=$2${cur:+:$cur}" ;; esac
}
_scfl_prepend AMENT_PREFIX_PATH "$_scfl_root/.venv"
_scfl_prepend AMENT_PREFIX_PATH "$_scfl_ws"
_scfl_prepend PYTHONPATH "$_scfl_ws/lib/python$_scfl_pyver/site-packages"
# this checkout first, so a second checkout (git worktree) sharing .venv runs its own code
_scfl_prepend PYTHONPATH "$_scfl_root"
_scfl_prepend LD_LIBRARY_PATH "$_scfl_ws/lib"
# `launch` / `launch_ros` are not on PyPI: without a system ROS, use the unmodified upstream copies
# in ../shared/vendor/ros2/python (SCFL_VENDOR_ROS2 overrides; docs/ros.md).
_scfl_vendor="${SCFL_VENDOR_ROS2:-$_scfl_root/../shared/vendor/ros2}"
if [[ -d "$_scfl_vendor/python/launch" ]] && ! python -c 'import launch_ros' 2>/dev/null; then
  _scfl_prepend PYTHONPATH "$(cd "$_scfl_vendor/python" && pwd)"
fi
unset _scfl_vendor
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Camera-sized best-effort messages need a larger Fast DDS shared-memory segment than its default:
# config/fastdds_shm.xml (docs/ros.md), unless the caller already chose transports or a profile.
if [[ -z "${FASTDDS_BUILTIN_TRANSPORTS:-}" && -z "${FASTDDS_DEFAULT_PROFILES_FILE:-}" ]]; then
  export FASTDDS_DEFAULT_PROFILES_FILE="$_scfl_root/config/fastdds_shm.xml"
fi
if [[ ! -d "$_scfl_ws/lib/python$_scfl_pyver/site-packages/scfl_interfaces" ]]; then
  echo "scfl env: ROS packages not built yet; run scripts/build_ros.sh" >&2
fi
unset -f _scfl_prepend
unset _scfl_ws _scfl_pyver
