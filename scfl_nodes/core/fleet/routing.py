"""Task -> skill routing tables for the fleet's router variants (paper 7.4).

The skill bank has ``num_experts`` skills; skill ``e`` is created for task
``tasks[e % len(tasks)]`` (its description). Variants, all built with ISSUE 2's
:class:`~scfl_nodes.core.routing.MoESkillRouter`:

* ``learned``   — gate trained on (task instruction, skill) pairs, weighted by how many
  robots do each task, with the Switch load-balancing loss;
* ``no_lb``     — the same gate with load-balancing weight 0;
* ``similarity``— no training: cosine similarity between the instruction and the skills'
  short descriptions (the router's cold-start path);
* ``random``    — ``top_k`` skills drawn at random per task (seeded), equal weights.
"""

from __future__ import annotations

import numpy as np


def skill_description(task: str) -> str:
    """Short human name of a task's skill ("door lock"), deliberately not the instruction text."""
    return task.removesuffix("-v3").replace("-", " ")


def build_routing(variant: str, tasks: list[str], task_traffic: dict[str, int], *, num_experts: int, top_k: int,
                  load_balance_weight: float, seed: int, encoder=None):
    """``(routing, info)``: routing maps task -> (expert indices, weights); info has utilisation."""
    import torch

    from scfl_nodes.core.routing import MoESkillRouter, get_text_encoder
    from scfl_nodes.core.sim import instruction_for

    encoder = encoder or get_text_encoder()
    instructions = [instruction_for(t) for t in tasks]
    task_emb = np.asarray(encoder.encode(instructions), dtype=np.float32)
    home = [tasks[e % len(tasks)] for e in range(num_experts)]
    routing: dict[str, tuple[list[int], list[float]]] = {}
    info: dict = {"variant": variant}
    if variant == "random":
        rng = np.random.default_rng([int(seed), 7])
        for t in tasks:
            idx = sorted(int(i) for i in rng.choice(num_experts, size=top_k, replace=False))
            routing[t] = (idx, [1.0 / top_k] * top_k)
    else:
        router = MoESkillRouter(num_experts, task_emb.shape[1], top_k, hidden=64,
                                load_balance_weight=0.0 if variant == "no_lb" else load_balance_weight, seed=int(seed))
        desc = np.asarray(encoder.encode([skill_description(h) for h in home]), dtype=np.float32)
        router.set_expert_descriptions([d[None] for d in desc])
        if variant == "similarity":
            probs = router.similarity_probabilities(torch.as_tensor(task_emb))
            vals, idxs = torch.topk(probs, top_k, dim=-1)
            vals = vals / vals.sum(-1, keepdim=True)
            for t, i, v in zip(tasks, idxs.tolist(), vals.tolist()):
                routing[t] = (list(i), list(v))
        elif variant in ("learned", "no_lb"):
            xs, ys = [], []
            for ti, t in enumerate(tasks):
                for e in range(num_experts):
                    if home[e] == t:
                        xs += [task_emb[ti]] * max(1, task_traffic.get(t, 1))
                        ys += [e] * max(1, task_traffic.get(t, 1))
            result = router.train_router((np.stack(xs), np.asarray(ys)), epochs=150, seed=int(seed))
            info["router_training"] = result.to_dict()
            idxs, vals = router.route(torch.as_tensor(task_emb), use_fallback=False)
            for t, i, v in zip(tasks, idxs.tolist(), vals.tolist()):
                routing[t] = (list(i), list(v))
        else:
            raise ValueError(f"unknown router variant {variant!r}")
    shares = np.zeros(num_experts)
    for t in tasks:
        idx, w = routing[t]
        for e, wi in zip(idx, w):
            shares[e] += wi * max(1, task_traffic.get(t, 1))
    info["utilisation"] = (shares / max(shares.sum(), 1e-12)).tolist()
    info["routing"] = {t: {"experts": routing[t][0], "weights": [round(float(x), 4) for x in routing[t][1]]} for t in tasks}
    return routing, info
