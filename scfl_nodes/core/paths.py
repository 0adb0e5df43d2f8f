"""Where the files scfl reads at run time live: one resolver for the checkout and the install.

Run from a checkout (``python -m scfl_nodes ...``, ``scfl up``, tests, a ``--symlink-install``
colcon build whose modules resolve into the checkout) the files are read from the repository.
Installed (``colcon build``, a robot's ``ros2 launch scfl_nodes scfl.launch.py``) they are read
from ``share/scfl_nodes`` found through the ament index, so nothing depends on where the Python
package happens to sit. Callers name a file by its path in the repository; the few bundled data
directories that are installed elsewhere are mapped in :data:`INSTALLED_AS`.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "scfl_nodes"

#: repository path -> path under share/scfl_nodes (CMakeLists.txt installs them there)
INSTALLED_AS = {
    "scfl_nodes/data/base_policy": "data/base_policy",
    "scfl_nodes/data/vision_policy": "data/vision_policy",
    "test/data/demo_bag": "data/demo_bag",
}

_CHECKOUT = Path(__file__).resolve().parents[2]


def checkout_root() -> Path | None:
    """The repository this module was loaded from, or None when it runs from an install."""
    if (_CHECKOUT / "package.xml").is_file() and (_CHECKOUT / "config").is_dir():
        return _CHECKOUT
    return None


def share_dir() -> Path | None:
    """``share/scfl_nodes`` of the install (ament index first, then this Python's prefix)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, ValueError, LookupError):
            pass
    except ImportError:
        pass
    prefix_share = Path(sys.prefix) / "share" / PACKAGE  # pip install of setup.py (data_files)
    return prefix_share if prefix_share.is_dir() else None


def package_path(relative: str) -> Path:
    """Path of ``relative`` (a repository path such as ``config/nodes.yaml``) for this run.

    Always returns a path (possibly non-existent, for the caller's error message).
    """
    relative = relative.strip("/")
    root = checkout_root()
    if root is not None:
        return root / relative
    share = share_dir()
    if share is None:
        return _CHECKOUT / relative
    for source, installed in INSTALLED_AS.items():
        if relative == source or relative.startswith(source + "/"):
            relative = installed + relative[len(source):]
            break
    return share / relative
