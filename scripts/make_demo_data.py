#!/usr/bin/env python3
"""Regenerate the bundled quick-start demonstrations in test/data/demos (< 1 MB).

Two tasks of a systematically biased base policy (see scfl_nodes.core.training.synthetic),
each stored in all three supported formats: NPZ episodes, a Parquet episode and a
rosbag2 recording (sqlite3 for one task, mcap for the other).
Usage: python scripts/make_demo_data.py [--out test/data/demos]
"""

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scfl_nodes.core.training import (synthetic_episodes, write_npz_episode, write_parquet_episode,  # noqa: E402
                                      write_rosbag_episode)

TASKS = [
    ("door_lock", "lock the door by turning the lock", 0, "sqlite3"),
    ("drawer_close", "close the drawer", 1, "mcap"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "test" / "data" / "demos"))
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        if not args.force:
            print(f"{out} exists; pass --force to regenerate it", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    for name, task, task_seed, storage in TASKS:
        episodes = synthetic_episodes(6, steps=40, obs_dim=16, action_dim=4, task=task, task_seed=task_seed,
                                      seed=10 + task_seed)
        for i, episode in enumerate(episodes[:4]):
            write_npz_episode(out / name / f"episode_{i:03d}.npz", episode)
        write_parquet_episode(out / name / "episode_004.parquet", episodes[4])
        write_rosbag_episode(out / name / "episode_005_bag", episodes[5], storage=storage)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
