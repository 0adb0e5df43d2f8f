"""`scfl retarget` end to end in a real subprocess: human demo -> robot episode + PNG, read back by
the project's demonstration reader and trained on by `scfl train-skill`; user errors are one line."""

import os
import subprocess
import sys

import numpy as np
import pytest

from scfl_nodes.core.retarget import load_human_demo, synthetic_pick_demo
from scfl_nodes.core.retarget.transforms import object_trajectory_in_robot_scene, pose_from_xyz_rpy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HUMAN_DEMO = os.path.join(REPO, "test", "data", "human_demo_pick.npz")


def scfl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "scfl_nodes", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})


def test_bundled_human_demo_is_the_documented_synthetic_one():
    demo, fresh = load_human_demo(HUMAN_DEMO), synthetic_pick_demo()
    np.testing.assert_array_equal(demo.hand_poses, fresh.hand_poses)
    np.testing.assert_array_equal(demo.object_pose, fresh.object_pose)
    assert demo.task == fresh.task and len(demo) == 40


@pytest.mark.timeout(600)
def test_cli_writes_robot_demo_and_plot_accepted_by_train_skill(tmp_path):
    demos = tmp_path / "demos"
    pose = "0.5,0.1,0.05,0,0,0.3"
    out, plot = demos / "pick_dls.npz", tmp_path / "pick.png"
    res = scfl("retarget", "--demo", HUMAN_DEMO, "--object-pose", pose, "--out", str(out), "--plot", str(plot),
               "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "40 reachable" in res.stdout
    res = scfl("retarget", "--demo", HUMAN_DEMO, "--object-pose", "0.45,-0.15,0.1,0,0,-0.4",
               "--out", str(demos / "pick_qp.npz"), "--solver", "qp", "--no-progress")
    assert res.returncode == 0, res.stderr

    # the PNG is a real image of a sensible size
    import matplotlib.image

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(plot)
    assert img.shape[0] > 400 and img.shape[1] > 600 and img.std() > 0.05

    # the episode follows the demonstration format and the reader of scfl_nodes.core.training accepts it
    from scfl_nodes.core.training import read_npz_episode

    episode = read_npz_episode(out)
    assert episode.observation.dtype == np.float32 and episode.observation.shape == (40, 21)
    assert episode.expert_action.shape == episode.base_action.shape == (40, 8)
    assert episode.task == "pick up the block and lift it"
    with np.load(out) as z:
        q, reachable = z["joint_positions"], z["reachable"]
        assert reachable.all() and z["position_error"].max() <= 1e-3
        np.testing.assert_allclose(z["expert_action"][:-1, :7], np.diff(q, axis=0), atol=1e-6)
    # end to end: the robot's gripper keeps the human hand's pose relative to the object
    from scfl_nodes.core.retarget import load_robot

    robot = load_robot("panda")
    human = load_human_demo(HUMAN_DEMO)
    objects = object_trajectory_in_robot_scene(human.object_pose, pose_from_xyz_rpy([0.5, 0.1, 0.05, 0, 0, 0.3]))
    achieved = np.array([robot.fk_matrix(qi) for qi in q])
    rel_robot = np.linalg.inv(objects) @ achieved
    rel_human = np.linalg.inv(human.object_pose) @ human.hand_poses
    assert np.abs(rel_robot[:, :3, 3] - rel_human[:, :3, 3]).max() <= 1e-3

    # a GMR prior fitted on these robot demos is written and used by a further retargeting run
    from scfl_nodes.cli import main
    from scfl_nodes.core.retarget import PosturePrior

    prior_path = tmp_path / "prior.npz"
    assert main(["retarget", "--fit-prior", str(demos), "--out", str(prior_path), "--components", "3"]) == 0
    prior = PosturePrior.load(prior_path, robot)
    assert prior.gmm.n_components == 3
    # the prior learned these demos' postures: its prediction at a demo waypoint is near the demo's q
    assert np.abs(prior.predict(achieved[20, :3, 3]) - q[20]).mean() < 0.3
    assert main(["retarget", "--demo", HUMAN_DEMO, "--object-pose", pose, "--prior", str(prior_path),
                 "--out", str(tmp_path / "with_prior.npz"), "--no-progress"]) == 0

    # and `scfl train-skill` trains a skill on the retargeted demos
    res = scfl("train-skill", "--demonstrations", str(demos), "--skill-name", "pick-block", "--epochs", "2",
               "--library", str(tmp_path / "lib"), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "lib").is_dir() and any((tmp_path / "lib").rglob("manifest.json"))


@pytest.mark.timeout(300)
def test_cli_user_errors_are_one_line_and_never_overwrite(tmp_path, capsys):
    out = tmp_path / "robot.npz"
    out.write_bytes(b"precious")
    cases = [
        (["--demo", str(tmp_path / "missing.npz"), "--object-pose", "0.5,0,0", "--out", str(tmp_path / "a.npz")],
         "does not exist"),
        (["--demo", HUMAN_DEMO, "--object-pose", "0.5,0,0", "--out", str(out)], "already exists"),
        (["--demo", HUMAN_DEMO, "--object-pose", "0.5,zero,0", "--out", str(tmp_path / "b.npz")], "numbers"),
        (["--demo", HUMAN_DEMO, "--object-pose", "0.5,0", "--out", str(tmp_path / "b.npz")], "3 (xyz)"),
        (["--demo", HUMAN_DEMO, "--object-pose", "0.5,0,0", "--out", str(tmp_path / "b.txt")], "must end in .npz"),
        (["--demo", HUMAN_DEMO, "--object-pose", "1.6,0,0.05", "--out", str(tmp_path / "far.npz"), "--no-progress"],
         "unreachable"),
    ]
    bad = tmp_path / "bad_demo.npz"
    hands = np.tile(np.eye(4), (5, 1, 1))
    hands[2, :3, :3] *= 1.5  # not a rotation
    np.savez(bad, hand_poses=hands, object_pose=np.eye(4))
    cases.append((["--demo", str(bad), "--object-pose", "0.5,0,0", "--out", str(tmp_path / "c.npz")],
                  "hand_poses[2]: rotation is not orthonormal"))
    from scfl_nodes.cli import main

    # one real subprocess (what a user sees), the rest through the same entry point in-process
    res = scfl("retarget", *cases[0][0])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and cases[0][1] in res.stderr
    for args, message in cases:
        assert main(["retarget", *args]) == 2, args
        err = capsys.readouterr().err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.startswith("scfl retarget: error:")]
        assert len(lines) == 1 and message in lines[0], (message, err)
    assert out.read_bytes() == b"precious"
    assert not (tmp_path / "far.npz").exists()  # unreachable demos are not written by default
    # ... unless asked: then every waypoint is flagged in the episode
    far = tmp_path / "far.npz"
    assert main(["retarget", "--demo", HUMAN_DEMO, "--object-pose", "1.6,0,0.05", "--out", str(far),
                 "--allow-unreachable", "--no-progress"]) == 0
    with np.load(far) as z:
        assert not z["reachable"].any() and (z["position_error"] > 0.1).all()
