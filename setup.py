"""ament_python-style setup for scfl_nodes (also installs the `scfl` CLI and the cloud layer)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "scfl_nodes"
NODES = [
    "camera_node",
    "vla_node",
    "router_node",
    "skill_node",
    "retarget_node",
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
