# Source this to use scfl from the repository: activates .venv and puts the generated
# ROS 2 interface package (built by scripts/build_interfaces.sh into ros_ws/install) on the paths.
_scfl_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$_scfl_root/.venv/bin/activate"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# ROS 2: the generated scfl_interfaces package (scripts/build_interfaces.sh, colcon --merge-install)
# on top of the ros-* wheels in .venv. Idempotent: sourcing twice does not grow the paths.
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
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Camera-sized best-effort messages need Fast DDS' large-data transports (docs/ros.md).
export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}"
if [[ ! -d "$_scfl_ws/lib/python$_scfl_pyver/site-packages/scfl_interfaces" ]]; then
  echo "scfl env: ROS interfaces not built yet; run scripts/build_interfaces.sh" >&2
fi
unset -f _scfl_prepend
unset _scfl_ws _scfl_pyver
