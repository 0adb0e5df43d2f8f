"""pip install of scfl (the `scfl` CLI, the nodes' Python code and the cloud layer).

ROS 2 builds use CMakeLists.txt (colcon, ament_cmake: interfaces, lib/scfl_nodes executables,
share/scfl_nodes); this file is for `pip install -e .` / wheels on machines without colcon.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "scfl_nodes"
NODES = [
    "camera_node",
    "vla_node",
    "router_node",
    "skill_node",
    "retarget_node",
    "command_node",
    "federation_bridge_node",
    "bag_player",
    "recorder_node",
    "trainer_node",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["scfl_nodes", "scfl_nodes.*", "scfl_cloud", "scfl_cloud.*"]),
    include_package_data=True,
    package_data={"scfl_nodes": ["data/**/*"], "scfl_cloud": ["templates/*", "static/*", "migrations/**/*", "alembic.ini"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*")),
        (f"share/{PACKAGE}/msg", glob("msg/*.msg")),
        (f"share/{PACKAGE}/srv", glob("srv/*.srv")),
        (f"share/{PACKAGE}/action", glob("action/*.action")),
        (f"share/{PACKAGE}/data/base_policy", glob("scfl_nodes/data/base_policy/*")),
        (f"share/{PACKAGE}/data/vision_policy", glob("scfl_nodes/data/vision_policy/*")),
        (f"share/{PACKAGE}/data/demo_bag", glob("test/data/demo_bag/*")),
    ],
    python_requires=">=3.10",
    zip_safe=False,
    maintainer="SCFL developers",
    maintainer_email="scfl-dev@example.org",
    description="Skill-centric federated learning for VLA robot fleets",
    license="Apache-2.0",
    entry_points={
        "console_scripts": ["scfl = scfl_nodes.cli:main"]
        + [f"{n} = scfl_nodes.nodes.{n}:main" for n in NODES],
    },
)
