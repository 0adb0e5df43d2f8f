#!/usr/bin/env python3
"""Train scfl's frozen image-conditioned base policy ONCE -> scfl_nodes/data/vision_policy/.

Renders deliberately few scripted-expert demonstrations per task from the ``sim`` camera
source's view (Meta-World's corner camera, core/perception/sim_camera.EnvRenderer) at the
policy's small input resolution, executing the expert's action plus Gaussian noise (labels
stay the expert's), fits the CNN by behaviour cloning, evaluates every task closed-loop on
rendered frames with held-out seeds, and writes weights (safetensors), the ONNX export and
config.json (training config, per-task success, sha256 of every file).

    nice -n 10 python scripts/train_vision_policy.py            # the shipped configuration
    python scripts/train_vision_policy.py --out /tmp/vision --demos-per-task 20 --eval-episodes 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def render_demos(task: str, n: int, seed: int, camera: str, size: int, noise: float, progress: bool = True):
    """(images (N, 3, S, S) float32, proprio (N, 4), expert actions (N, 4)) of ``n`` noisy expert episodes."""
    import numpy as np
    from tqdm.auto import tqdm

    from scfl_nodes.core.perception.sim_camera import EnvRenderer
    from scfl_nodes.core.sim import MAX_EPISODE_STEPS, ScriptedExpert, make_env, reset_episode
    from scfl_nodes.core.vla.vision_policy import PROPRIO_DIM, preprocess_images

    env = make_env(task, 0)
    renderer = EnvRenderer(env, camera, size, size)
    expert = ScriptedExpert(task)
    rng = np.random.default_rng([seed, 7])
    images, proprio, actions = [], [], []
    try:
        for ep in tqdm(range(n), desc=f"render {task}", disable=not progress, leave=False):
            state = reset_episode(env, seed, ep)
            for _ in range(MAX_EPISODE_STEPS):
                images.append(renderer.render()[0])
                a = np.asarray(expert.act(state[None]), dtype=np.float32)[0]
                proprio.append(state[:PROPRIO_DIM].astype(np.float32))
                actions.append(a)
                state, _, _, truncated, info = env.step(np.clip(a + rng.normal(0, noise, a.shape), -1, 1).astype(np.float32))
                if info.get("success", 0.0) >= 1.0 or truncated:
                    break
    finally:
        renderer.close()
        env.close()
    return preprocess_images(np.stack(images), size), np.stack(proprio), np.stack(actions)


def main(argv=None) -> int:
    import numpy as np
    import torch

    from scfl_nodes.core.sim import evaluate, instruction_for
    from scfl_nodes.core.vla.text import encode_instructions
    from scfl_nodes.core.vla.vision_policy import (
        VisionPolicyArch,
        VisionTrainingConfig,
        default_vision_policy_dir,
        load_vision_policy,
        save_vision_policy,
        train_vision_policy_net,
    )

    d = VisionTrainingConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=default_vision_policy_dir())
    p.add_argument("--demos-per-task", type=int, default=d.demos_per_task)
    p.add_argument("--demo-seed", type=int, default=d.demo_seed)
    p.add_argument("--action-noise", type=float, default=d.action_noise)
    p.add_argument("--train-seed", type=int, default=d.train_seed)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--image-size", type=int, default=d.arch.image_size)
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument("--eval-seed", type=int, default=d.eval_seed)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--force", action="store_true", help="replace an existing policy in --out")
    args = p.parse_args(argv)
    if (args.out / "config.json").exists() and not args.force:
        print(f"train_vision_policy: error: {args.out} already holds a policy; pass --force to replace it", file=sys.stderr)
        return 2
    if args.eval_episodes < 1 or args.demos_per_task < 1 or not 16 <= args.image_size <= 256:
        print("train_vision_policy: error: --eval-episodes and --demos-per-task must be >= 1, --image-size in 16..256", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    config = VisionTrainingConfig(
        demos_per_task=args.demos_per_task, demo_seed=args.demo_seed, action_noise=args.action_noise,
        train_seed=args.train_seed, epochs=args.epochs, eval_episodes=args.eval_episodes, eval_seed=args.eval_seed,
        arch=VisionPolicyArch(image_size=args.image_size),
    )
    t0 = time.time()
    instructions = [instruction_for(t) for t in config.tasks]
    text = dict(zip(config.tasks, encode_instructions(instructions)))
    images, proprio, texts, actions = [], [], [], []
    for task in config.tasks:
        im, pr, ac = render_demos(task, config.demos_per_task, config.demo_seed, config.camera, config.arch.image_size,
                                  config.action_noise)
        images.append(im), proprio.append(pr), actions.append(ac)
        texts.append(np.repeat(text[task][None], len(ac), axis=0))
        print(f"  {task:18s} {len(ac)} rendered frames")
    data_s = time.time() - t0
    net, metrics = train_vision_policy_net(np.concatenate(images), np.concatenate(proprio), np.concatenate(texts),
                                           np.concatenate(actions), config)
    train_s = time.time() - t0 - data_s
    print(f"rendered {metrics['samples']} frames in {data_s:.0f} s, trained in {train_s:.0f} s (final MSE {metrics['final_mse']:.4f})")

    cache = {instr: text[task] for task, instr in zip(config.tasks, instructions)}
    extra = {"training": {**metrics, "render_seconds": round(data_s, 1), "train_seconds": round(train_s, 1),
                          "torch": torch.__version__}}
    tmp = args.out.with_name(args.out.name + ".tmp")
    save_vision_policy(net, tmp, config, cache, extra)
    policy = load_vision_policy(tmp)
    success = {}
    t1 = time.time()
    for task in config.tasks:
        success[task] = evaluate(policy, task, config.eval_episodes, seed=config.eval_seed, progress=True)
        print(f"  {task:18s} success {success[task]:.2f} over {config.eval_episodes} episodes (rendered, no proprio dropout)")
    extra["success"] = success
    extra["success_eval"] = {"episodes_per_task": config.eval_episodes, "seed": config.eval_seed, "max_steps": 500,
                             "proprioception": True, "seconds": round(time.time() - t1, 1)}
    save_vision_policy(net, tmp, config, cache, extra)  # same weights, config now holds the evaluation
    args.out.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        f.replace(args.out / f.name)
    tmp.rmdir()
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
