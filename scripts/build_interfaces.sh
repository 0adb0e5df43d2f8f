#!/usr/bin/env bash
# Former name of scripts/build_ros.sh (which now builds the whole colcon workspace ros_ws/).
exec bash "$(dirname "${BASH_SOURCE[0]}")/build_ros.sh" "$@"
