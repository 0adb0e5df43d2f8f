"""config/scfl.rviz stays true to the graph: relative topics (so it works under a namespace) that
the nodes actually publish by default, and the fixed frame at the root of the TF tree."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _topics(displays) -> dict[str, str]:
    out = {}
    for d in displays:
        for key in ("Topic", "Description Topic"):
            if isinstance(d.get(key), dict):
                out[d["Name"]] = d[key]["Value"]
    return out


def test_rviz_topics_are_relative_and_published_by_the_nodes():
    rviz = yaml.safe_load((ROOT / "config" / "scfl.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "world"
    topics = _topics(manager["Displays"])
    assert topics and all(not t.startswith("/") for t in topics.values()), topics  # namespace-safe
    params = yaml.safe_load((ROOT / "config" / "nodes.yaml").read_text())
    retarget = params["/**/retarget_node"]["ros__parameters"]
    vla = params["/**/vla_node"]["ros__parameters"]
    assert topics["Retargeting preview"] == retarget["robot_description_topic"]
    assert topics["Robot"] == "robot_description"  # the robot driver's, not retarget_node's
    assert topics["Camera"] == vla["image_topic"]
    skill_src = (ROOT / "scfl_nodes" / "nodes" / "skill_node.py").read_text()
    retarget_src = (ROOT / "scfl_nodes" / "nodes" / "retarget_node.py").read_text()
    assert f'"{topics["Active skills + weights"]}"' in skill_src
    assert f'"{topics["Retargeting (EE targets, achieved path)"]}"' in retarget_src
    preview = next(d for d in manager["Displays"] if d["Name"] == "Retargeting preview")
    assert preview["TF Prefix"] == "retarget"
