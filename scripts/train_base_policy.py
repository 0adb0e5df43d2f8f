#!/usr/bin/env python3
"""Train scfl's frozen Meta-World base policy ONCE and write it to scfl_nodes/data/base_policy/.

Collects a few scripted-expert demonstrations per task (deliberately few: the base must be
imperfect so residual skills have something to fix), fits the language-conditioned MLP by
behaviour cloning, evaluates every task on held-out seeds with >= 50 episodes, and writes
weights (safetensors), the ONNX export and config.json (training config, per-task success,
sha256 of every file). Runs in ~1-3 minutes on one core.

    python scripts/train_base_policy.py                    # the shipped configuration
    python scripts/train_base_policy.py --out /tmp/base --demos-per-task 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import numpy as np
    import torch

    from scfl_nodes.core.sim import collect_expert_episodes, evaluate, instruction_for
    from scfl_nodes.core.vla.base_policy import (
        BasePolicyArch,
        BaseTrainingConfig,
        default_base_policy_dir,
        load_scfl_base_policy,
        save_base_policy,
        train_base_policy_net,
    )
    from scfl_nodes.core.vla.text import encode_instructions

    d = BaseTrainingConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=default_base_policy_dir())
    p.add_argument("--demos-per-task", type=int, default=d.demos_per_task)
    p.add_argument("--demo-seed", type=int, default=d.demo_seed)
    p.add_argument("--train-seed", type=int, default=d.train_seed)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--hidden", type=int, default=d.arch.hidden)
    p.add_argument("--perception-offset", type=float, nargs=3, default=d.perception_offset_m, metavar=("X", "Y", "Z"))
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument("--eval-seed", type=int, default=d.eval_seed)
    p.add_argument("--force", action="store_true", help="replace an existing policy in --out")
    args = p.parse_args(argv)
    if (args.out / "config.json").exists() and not args.force:
        print(f"train_base_policy: error: {args.out} already holds a base policy; pass --force to replace it", file=sys.stderr)
        return 2
    if args.eval_episodes < 1 or args.demos_per_task < 1:
        print("train_base_policy: error: --eval-episodes and --demos-per-task must be >= 1", file=sys.stderr)
        return 2

    torch.set_num_threads(1)
    config = BaseTrainingConfig(
        demos_per_task=args.demos_per_task,
        demo_seed=args.demo_seed,
        train_seed=args.train_seed,
        epochs=args.epochs,
        perception_offset_m=tuple(args.perception_offset),
        eval_episodes=args.eval_episodes,
        eval_seed=args.eval_seed,
        arch=BasePolicyArch(hidden=args.hidden),
    )
    t0 = time.time()
    instructions = [instruction_for(t) for t in config.tasks]
    text = dict(zip(config.tasks, encode_instructions(instructions)))
    states, texts, actions = [], [], []
    for task in config.tasks:
        for ep in collect_expert_episodes(task, config.demos_per_task, seed=config.demo_seed, progress=True):
            states.append(ep["state"])
            actions.append(ep["expert_action"])
            texts.append(np.repeat(text[task][None], len(ep["state"]), axis=0))
    net, metrics = train_base_policy_net(np.concatenate(states), np.concatenate(texts), np.concatenate(actions), config)
    train_s = time.time() - t0
    print(f"trained on {metrics['samples']} steps in {train_s:.1f} s (final MSE {metrics['final_mse']:.4f})")

    cache = {instr: text[task] for task, instr in zip(config.tasks, instructions)}
    extra = {"training": {**metrics, "seconds": round(train_s, 1), "torch": torch.__version__}}
    tmp = args.out.with_name(args.out.name + ".tmp")
    save_base_policy(net, tmp, config, cache, extra)
    policy = load_scfl_base_policy(tmp)
    success = {}
    for task in config.tasks:
        success[task] = evaluate(policy, task, config.eval_episodes, seed=config.eval_seed, progress=True)
        print(f"  {task:18s} success {success[task]:.2f} over {config.eval_episodes} episodes")
    extra["success"] = success
    extra["success_eval"] = {"episodes_per_task": config.eval_episodes, "seed": config.eval_seed, "max_steps": 500}
    save_base_policy(net, tmp, config, cache, extra)  # same weights, config now holds the evaluation
    args.out.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        f.replace(args.out / f.name)
    tmp.rmdir()
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
