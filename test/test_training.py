"""Demonstration formats and validation, residual skill training, and `scfl train-skill`."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scfl_nodes.core.skills import SkillLibrary, SkillModule
from scfl_nodes.core.training import (
    DemonstrationError,
    Episode,
    load_demonstrations,
    read_npz_episode,
    read_parquet_episodes,
    read_rosbag_episode,
    residual_action_error,
    split_episodes,
    synthetic_episodes,
    train_residual_skill,
    write_npz_episode,
    write_parquet_episode,
    write_rosbag_episode,
)

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "test" / "data" / "demos"


def _same(a: Episode, b: Episode):
    for name in ("observation", "base_action", "expert_action"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.task == b.task


@pytest.mark.parametrize("fmt", ["npz", "parquet", "sqlite3", "mcap"])
def test_every_format_round_trips_exactly(tmp_path, fmt):
    ep = synthetic_episodes(1, steps=12, obs_dim=5, action_dim=3, task="close the drawer")[0]
    if fmt == "npz":
        got = read_npz_episode(write_npz_episode(tmp_path / "e.npz", ep))
    elif fmt == "parquet":
        (got,) = read_parquet_episodes(write_parquet_episode(tmp_path / "e.parquet", ep))
    else:
        got = read_rosbag_episode(write_rosbag_episode(tmp_path / "bag", ep, storage=fmt))
    _same(ep, got)
    np.testing.assert_allclose(got.timestamp, ep.timestamp, atol=1e-9)
    with pytest.raises(FileExistsError):  # demonstrations are never overwritten
        write_npz_episode(tmp_path / "e.npz", ep) if fmt == "npz" else write_parquet_episode(
            tmp_path / "e.parquet", ep) if fmt == "parquet" else write_rosbag_episode(tmp_path / "bag", ep)


def test_parquet_file_with_episode_column_holds_several_episodes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    eps = synthetic_episodes(2, steps=6, obs_dim=3, action_dim=2)
    rows = {"episode": [], "observation": [], "base_action": [], "expert_action": []}
    for n, ep in enumerate(eps):
        rows["episode"] += [n] * ep.length
        for name in ("observation", "base_action", "expert_action"):
            rows[name] += getattr(ep, name).tolist()
    pq.write_table(pa.table(rows), tmp_path / "two.parquet")
    got = read_parquet_episodes(tmp_path / "two.parquet")
    assert len(got) == 2
    for a, b in zip(eps, got):
        np.testing.assert_allclose(b.expert_action, a.expert_action, rtol=1e-6)


def test_bundled_demonstrations_cover_all_formats():
    for task_dir, task in (("door_lock", "lock the door by turning the lock"), ("drawer_close", "close the drawer")):
        episodes = load_demonstrations(BUNDLED / task_dir)
        assert len(episodes) == 6 and {e.task for e in episodes} == {task}
        suffixes = {Path(e.source).suffix or "bag" for e in episodes}
        assert suffixes == {".npz", ".parquet", "bag"}
        assert {(e.obs_dim, e.action_dim) for e in episodes} == {(16, 4)}
    assert sum(f.stat().st_size for f in BUNDLED.rglob("*") if f.is_file()) < 1_000_000


def _write_bad(kind: str, root: Path) -> tuple[Path, str]:
    """A bad demonstration set and the text its error must contain."""
    good = synthetic_episodes(2, steps=8, obs_dim=6, action_dim=3)
    d = root / kind
    if kind == "missing":
        return d, "does not exist"
    d.mkdir()
    if kind == "empty_dir":
        (d / "notes.txt").write_text("no episodes here")
        return d, "no demonstration episodes"
    if kind == "empty_bag":
        from rosbags.rosbag2 import Writer
        from rosbags.typesys import Stores, get_typestore

        with Writer(d / "bag", version=9) as w:
            w.add_connection("/scfl/observation", "std_msgs/msg/Float32MultiArray",
                             typestore=get_typestore(Stores.ROS2_KILTED))
        return d, "bag: rosbag2 has no messages"
    if kind == "bag_missing_topic":
        from rosbags.rosbag2 import Writer
        from rosbags.typesys import Stores, get_typestore

        ts = get_typestore(Stores.ROS2_KILTED)
        arr, lay = ts.types["std_msgs/msg/Float32MultiArray"], ts.types["std_msgs/msg/MultiArrayLayout"]
        with Writer(d / "bag", version=9) as w:
            conns = [w.add_connection(t, "std_msgs/msg/Float32MultiArray", typestore=ts)
                     for t in ("/scfl/observation", "/scfl/base_action")]
            for c in conns:
                msg = arr(layout=lay(dim=[], data_offset=0), data=np.zeros(3, np.float32))
                w.write(c, 1, ts.serialize_cdr(msg, "std_msgs/msg/Float32MultiArray"))
        return d, "no messages on /scfl/expert_action"
    if kind == "nan":
        write_npz_episode(d / "a.npz", good[0])
        bad = good[1]
        bad.expert_action[3, 1] = np.nan
        np.savez(d / "b.npz", observation=bad.observation, base_action=bad.base_action,
                 expert_action=bad.expert_action)
        return d, "b.npz: expert_action contains NaN or inf (first at step 3)"
    if kind == "inf":
        bad = good[0]
        bad.observation[5, 0] = np.inf
        np.savez(d / "a.npz", observation=bad.observation, base_action=bad.base_action,
                 expert_action=bad.expert_action)
        return d, "a.npz: observation contains NaN or inf (first at step 5)"
    if kind == "dims_across_episodes":
        write_npz_episode(d / "a.npz", good[0])
        write_npz_episode(d / "b.npz", synthetic_episodes(1, steps=8, obs_dim=4, action_dim=3)[0])
        return d, "b.npz: observation dim is 4, expected 6"
    if kind == "action_dims":
        e = good[0]
        np.savez(d / "a.npz", observation=e.observation, base_action=e.base_action, expert_action=e.expert_action[:, :2])
        return d, "a.npz: base_action has dim 3 but expert_action has dim 2"
    if kind == "lengths":
        e = good[0]
        np.savez(d / "a.npz", observation=e.observation[:5], base_action=e.base_action, expert_action=e.expert_action)
        return d, "a.npz: arrays have different numbers of steps"
    if kind == "one_d":
        e = good[0]
        np.savez(d / "a.npz", observation=e.observation[:, 0], base_action=e.base_action, expert_action=e.expert_action)
        return d, "a.npz: observation must be 2-D"
    if kind == "missing_array":
        e = good[0]
        np.savez(d / "a.npz", observation=e.observation, base_action=e.base_action)
        return d, "a.npz: missing array(s) expert_action"
    if kind == "corrupt_npz":
        (d / "a.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
        return d, "a.npz: not a readable NPZ episode"
    if kind == "zero_steps":
        np.savez(d / "a.npz", observation=np.zeros((0, 6), np.float32), base_action=np.zeros((0, 3), np.float32),
                 expert_action=np.zeros((0, 3), np.float32))
        return d, "a.npz: episode has no steps"
    if kind == "parquet_ragged":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"observation": [[1.0, 2.0], [1.0]], "base_action": [[0.0], [0.0]],
                                 "expert_action": [[0.0], [0.0]]}), d / "a.parquet")
        return d, "a.parquet: column observation must hold equal-length numeric lists"
    raise AssertionError(kind)


BAD_KINDS = ["missing", "empty_dir", "empty_bag", "bag_missing_topic", "nan", "inf", "dims_across_episodes",
             "action_dims", "lengths", "one_d", "missing_array", "corrupt_npz", "zero_steps", "parquet_ragged"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_demonstrations_give_one_clear_error_naming_the_file(tmp_path, kind):
    path, expected = _write_bad(kind, tmp_path)
    with pytest.raises(DemonstrationError) as err:
        load_demonstrations(path)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert str(path) in message


@pytest.mark.timeout(300)
def test_residual_skill_corrects_a_biased_base_on_held_out_episodes():
    train = synthetic_episodes(8, steps=50, obs_dim=16, action_dim=4, task_seed=3, seed=0)
    held_out = synthetic_episodes(4, steps=50, obs_dim=16, action_dim=4, task_seed=3, seed=123)
    module, metrics = train_residual_skill(train, hidden=64, epochs=60, lr=3e-3, batch_size=64,
                                           patience=10, seed=0, progress=False)
    err = residual_action_error(module, held_out)
    assert err["skill_mse"] < 0.1 * err["base_mse"], err
    assert metrics["val_loss"] < 0.2 * metrics["val_base_mse"]
    assert metrics["val_episodes"] == 2 and metrics["train_steps"] == 300 and metrics["best_epoch"] >= 1
    assert len(metrics["history"]) == metrics["epochs_run"]
    # an untrained skill does not help: the improvement comes from training
    torch.manual_seed(0)
    assert residual_action_error(SkillModule(16, 4, 64), held_out)["skill_mse"] > 0.5 * err["base_mse"]


@pytest.mark.timeout(300)
def test_training_is_seeded_and_stops_early_with_best_weights():
    eps = synthetic_episodes(4, steps=20, obs_dim=6, action_dim=2, seed=5)
    kwargs = dict(hidden=16, epochs=5, lr=1e-2, batch_size=16, progress=False)
    a, _ = train_residual_skill(eps, seed=1, **kwargs)
    b, _ = train_residual_skill(eps, seed=1, **kwargs)
    c, _ = train_residual_skill(eps, seed=2, **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.encoder.weight, c.encoder.weight)

    # pure-noise targets: validation loss can only get worse once the skill starts fitting noise
    noisy = synthetic_episodes(4, steps=20, obs_dim=6, action_dim=2, bias_scale=0.0, noise=0.5, seed=6)
    module, m = train_residual_skill(noisy, hidden=64, epochs=400, lr=1e-2, batch_size=16, patience=5, seed=0,
                                     progress=False)
    assert m["stopped_early"] and m["epochs_run"] < 400 and m["epochs_run"] == m["best_epoch"] + 5
    _, val = split_episodes(noisy, 0.2, 0)
    assert residual_action_error(module, val)["skill_mse"] == pytest.approx(m["val_loss"], rel=1e-5)


def test_episodes_may_be_plain_dicts_and_progress_is_shown(capsys):
    eps = synthetic_episodes(3, steps=10, obs_dim=6, action_dim=2, task="t")
    dicts = [{"observation": e.observation, "base_action": e.base_action, "expert_action": e.expert_action,
              "task": np.array("t"), "state": np.zeros(3)} for e in eps]
    a, _ = train_residual_skill(eps, hidden=8, epochs=2, progress=False)
    b, m = train_residual_skill(dicts, hidden=8, epochs=2, progress=True)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert "train skill" in capsys.readouterr().err  # tqdm bar on stderr
    with pytest.raises(DemonstrationError, match="missing array"):
        train_residual_skill([{"observation": eps[0].observation}], epochs=1, progress=False)


def test_fine_tuning_starts_from_init_module_without_modifying_it():
    eps = synthetic_episodes(3, steps=10, obs_dim=6, action_dim=2)
    torch.manual_seed(7)
    init = SkillModule(6, 2, 16)
    snapshot = {k: v.clone() for k, v in init.state_dict().items()}
    tuned, m = train_residual_skill(eps, init_module=init, epochs=1, lr=1e-6, progress=False)
    assert m["fine_tuned"] and tuned is not init
    assert all(torch.equal(snapshot[k], v) for k, v in init.state_dict().items())
    assert torch.allclose(tuned.encoder.weight, init.encoder.weight, atol=1e-4)
    with pytest.raises(ValueError, match="observation dim is 6, expected 5"):
        train_residual_skill(eps, init_module=SkillModule(5, 2, 16), epochs=1, progress=False)


def _scfl(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "scfl_nodes", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


@pytest.mark.timeout(400)
def test_train_skill_cli_writes_new_versions_and_never_overwrites(tmp_path):
    lib = tmp_path / "lib"
    common = ["--skill-name", "Door lock", "--library", lib, "--hidden", 32, "--no-progress", "--seed", 0]
    out = _scfl("train-skill", "--demonstrations", BUNDLED / "door_lock", "--epochs", 30, *common,
                "--task", "turn the door lock")
    assert out.returncode == 0, out.stderr
    assert "skill door_lock v1" in out.stdout
    library = SkillLibrary(lib)
    v1 = library.get("door_lock")
    assert v1.manifest.parent_version is None
    assert set(v1.task_descriptions) == {"turn the door lock", "lock the door by turning the lock"}
    assert v1.manifest.training["epochs_run"] <= 30 and v1.manifest.training["episodes"] == 6
    assert v1.manifest.training["val_loss"] < v1.manifest.training["val_base_mse"]
    v1_bytes = (lib / "door_lock/v1/weights.safetensors").read_bytes()

    out = _scfl("train-skill", "--demonstrations", BUNDLED / "door_lock", "--epochs", 3, *common)
    assert out.returncode == 0, out.stderr
    v2 = library.get("door_lock")
    assert (v2.version, v2.manifest.parent_version, v2.manifest.training["fine_tuned"]) == (2, 1, True)
    assert (lib / "door_lock/v1/weights.safetensors").read_bytes() == v1_bytes

    # same name, other dims: refused with a hint, nothing written
    other = tmp_path / "other"
    write_npz_episode(other / "a.npz", synthetic_episodes(1, steps=10, obs_dim=5, action_dim=4)[0])
    out = _scfl("train-skill", "--demonstrations", other, "--epochs", 1, *common)
    assert out.returncode == 2 and "--from-scratch" in out.stderr and out.stderr.count("\n") == 1
    assert library.versions("door_lock") == [1, 2]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["missing", "empty_dir", "empty_bag", "nan", "dims_across_episodes"])
def test_train_skill_cli_rejects_bad_input_with_one_line(tmp_path, kind):
    path, expected = _write_bad(kind, tmp_path)
    lib = tmp_path / "lib"
    out = _scfl("train-skill", "--demonstrations", path, "--skill-name", "x", "--epochs", 2, "--library", lib)
    assert out.returncode == 2
    assert out.stderr.startswith("scfl train-skill: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert expected in out.stderr and "Traceback" not in out.stderr
    assert not lib.exists()


def test_train_skill_cli_rejects_bad_arguments(tmp_path):
    out = _scfl("train-skill", "--demonstrations", BUNDLED / "door_lock", "--skill-name", "x", "--epochs", 0)
    assert out.returncode == 2 and out.stderr.strip() == "scfl train-skill: error: --epochs must be >= 1, got 0"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("training:\n  patience: 0\n")
    out = _scfl("train-skill", "--demonstrations", BUNDLED / "door_lock", "--skill-name", "x", "--config", cfg)
    assert out.returncode == 2 and "training.patience: must be >= 1" in out.stderr
    assert out.stderr.count("\n") == 1
