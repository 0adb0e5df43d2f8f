"""Joint training of a router and its skills from multi-task demonstrations.

When demonstrations are not labelled with the skill that should serve them, the router
and the skills are trained together on the action error of the routed mixture
``a_base + sum_i w_i s_i(o, a_base)``. This is where experts collapse: skills the router
picks early improve fastest and get picked more. The Switch load-balancing loss
(weight ``load_balance_weight``) counters it — the paper's 7.4 ablation, measured by
:func:`train_skills_with_router` and ``test/test_router.py``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..routing.router import load_balance_loss, normalised_entropy
from ..skills.composer import compose_actions
from ..skills.module import SkillModule
from .demonstrations import Episode, validate_episode
from .residual import torch_threads


def train_skills_with_router(
    router,
    skills: Sequence[SkillModule],
    episodes: Sequence[Episode],
    task_embeddings,
    *,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 128,
    seed: int = 0,
    load_balance_weight: float | None = None,
    progress: bool = False,
    num_threads: int | None = 1,
) -> dict:
    """Train ``router`` and ``skills`` (in place) on unlabelled multi-task episodes.

    ``task_embeddings`` is ``(len(episodes), D)``: the embedding of each episode's task
    description. Returns final task loss, the traffic share of every expert over all
    steps, its normalised entropy and the share of the 3 busiest experts.
    """
    skills = list(skills)
    if len(skills) != router.num_experts:
        raise ValueError(f"router has {router.num_experts} experts but {len(skills)} skills were given")
    episodes = [validate_episode(e) for e in episodes]
    emb = np.asarray(task_embeddings, dtype=np.float32)
    if emb.shape != (len(episodes), router.embedding_dim):
        raise ValueError(f"task_embeddings must be ({len(episodes)}, {router.embedding_dim}), got {emb.shape}")
    weight = router.load_balance_weight if load_balance_weight is None else float(load_balance_weight)
    obs = torch.as_tensor(np.concatenate([e.observation for e in episodes]))
    base = torch.as_tensor(np.concatenate([e.base_action for e in episodes]))
    target = torch.as_tensor(np.concatenate([e.expert_action for e in episodes]))
    task = torch.as_tensor(np.repeat(emb, [e.length for e in episodes], axis=0))
    params = list(router.parameters()) + [p for s in skills for p in s.parameters()]
    with torch_threads(num_threads):
        optimiser = torch.optim.Adam(params, lr=lr)
        generator = torch.Generator().manual_seed(seed)
        iterator = range(epochs)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="train router + skills", unit="epoch")
        router.train()
        task_loss = torch.tensor(0.0)
        for _ in iterator:
            perm = torch.randperm(len(obs), generator=generator)
            for start in range(0, len(obs), batch_size):
                idx = perm[start:start + batch_size]
                dense, mask, probs = router.dispatch(router.gating_network(task[idx]))
                residuals = torch.stack([s(obs[idx], base[idx]) for s in skills])  # (N, B, A)
                prediction = compose_actions(base[idx], residuals, dense)  # a_base + sum_i w_i s_i, per-sample w
                task_loss = F.mse_loss(prediction, target[idx])
                loss = task_loss + weight * load_balance_loss(probs, mask)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        router.eval()
        for s in skills:
            s.eval()
        share = router.utilisation(task, use_fallback=False)
    return {
        "task_loss": float(task_loss.detach()),
        "utilisation": share.tolist(),
        "normalised_entropy": normalised_entropy(share),
        "top3_share": float(np.sort(share)[-3:].sum()),
        "max_share": float(share.max()),
        "load_balance_weight": weight,
        "epochs": epochs,
    }
