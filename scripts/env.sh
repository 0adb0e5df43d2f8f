# Source this to use scfl from the repository: activates .venv and puts the generated
# ROS 2 interface package (built by scripts/build_interfaces.sh into ros_ws/install) on the paths.
_scfl_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$_scfl_root/.venv/bin/activate"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
