"""Task -> skill routers: top-k MoE gating (paper 3.4) and FedVLA's dual-gating DGMoE.

Both routers map a task-description embedding to a few skills and their weights.

* :class:`MoESkillRouter` — ``w = renormalise(TopK(softmax(g(e))))`` with the Switch
  load-balancing loss ``N * sum_i f_i * P_i`` that keeps a router trained on skewed task
  traffic from sending everything to a few experts (paper 7.4).
* :class:`DualGatingRouter` — token-side soft scores plus expert-side learnable
  thresholds: expert ``i`` answers only if its score exceeds ``lambda * W_e[i]``, so
  easy tasks use one skill and ambiguous ones several (FedVLA DGMoE, lambda = 0.5).

Cold start (paper 8.1): a router only knows the descriptions it was trained on. When a
task's embedding has cosine similarity below ``cold_start_threshold`` to *every*
training description, the gate's output is extrapolation, so the router routes by
cosine similarity to the skills' own task descriptions instead (softmax with
temperature :data:`COLD_START_TEMPERATURE`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Default cosine-similarity threshold below which a task counts as unseen (MiniLM
#: paraphrases score ~0.7-0.9, different manipulation tasks ~0.2-0.5).
DEFAULT_COLD_START_THRESHOLD = 0.5
#: Softmax temperature over cosine similarities in the cold-start fallback.
COLD_START_TEMPERATURE = 0.05
ROUTER_WEIGHTS_FILE = "router.safetensors"
ROUTER_CONFIG_FILE = "router.json"


class RouterError(ValueError):
    """Bad router input (dimensions, labels) or an unreadable saved router."""


def load_balance_loss(probabilities: torch.Tensor, assignments: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer balance loss ``N * sum_i f_i * P_i``.

    ``probabilities`` (B, N): router probabilities per task; ``assignments`` (B, N): 1 where
    a task was dispatched to expert i (top-k or DGMoE activations). ``f_i`` is expert i's
    share of all dispatches, ``P_i`` its mean probability. Equals 1 for perfectly uniform
    routing and grows towards N as routing collapses onto one expert. Gradients flow
    through ``P`` only (``f`` counts are not differentiable), as in Switch.
    """
    if probabilities.shape != assignments.shape or probabilities.dim() != 2:
        raise RouterError(f"probabilities and assignments must both be (B, N), got {tuple(probabilities.shape)} "
                          f"and {tuple(assignments.shape)}")
    num_experts = probabilities.shape[1]
    counts = assignments.detach().to(probabilities.dtype).sum(0)
    f = counts / counts.sum().clamp_min(1e-12)
    p = probabilities.mean(0)
    return num_experts * torch.sum(f * p)


def normalised_entropy(shares: np.ndarray) -> float:
    """Entropy of a utilisation vector divided by log(N): 1 = uniform, 0 = one expert."""
    shares = np.asarray(shares, dtype=np.float64)
    shares = shares / max(shares.sum(), 1e-12)
    nz = shares[shares > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(len(shares))) if len(shares) > 1 else 1.0


@dataclasses.dataclass
class RouterTrainingResult:
    """What :meth:`train_router` reports (also stored next to a saved router)."""

    epochs: int
    task_loss: float
    balance_loss: float
    accuracy: float
    utilisation: list[float]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _RouterBase(nn.Module):
    kind = "base"

    def __init__(self, num_experts: int, embedding_dim: int, hidden: int, load_balance_weight: float,
                 cold_start_threshold: float, expert_ids: Sequence[str] | None, seed: int | None):
        super().__init__()
        for name, value in (("num_experts", num_experts), ("embedding_dim", embedding_dim), ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RouterError(f"{name} must be a positive integer, got {value!r}")
        if load_balance_weight < 0:
            raise RouterError(f"load_balance_weight must be >= 0, got {load_balance_weight}")
        if not -1.0 <= cold_start_threshold <= 1.0:
            raise RouterError(f"cold_start_threshold is a cosine similarity in [-1, 1], got {cold_start_threshold}")
        if expert_ids is not None and len(expert_ids) != num_experts:
            raise RouterError(f"{len(expert_ids)} expert_ids for {num_experts} experts")
        self.num_experts = num_experts
        self.embedding_dim = embedding_dim
        self.hidden = hidden
        self.load_balance_weight = float(load_balance_weight)
        self.cold_start_threshold = float(cold_start_threshold)
        self.expert_ids = list(expert_ids) if expert_ids is not None else None
        self.seed = seed
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.gating_network = nn.Sequential(
                nn.Linear(embedding_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_experts)
            )
        # Cold-start state: normalised training embeddings (novelty test) and one mean
        # description embedding per expert (similarity fallback). Saved with the router.
        self.train_embeddings = torch.zeros(0, embedding_dim)
        self.expert_embeddings = torch.zeros(num_experts, embedding_dim)
        self.expert_has_description = torch.zeros(num_experts, dtype=torch.bool)

    # ----------------------------------------------------------------- helpers
    def _batch(self, task_embedding) -> tuple[torch.Tensor, bool]:
        if isinstance(task_embedding, np.ndarray) and not task_embedding.flags.writeable:
            task_embedding = np.array(task_embedding)  # cached embeddings are read-only
        e = torch.as_tensor(task_embedding, dtype=torch.float32)
        single = e.dim() == 1
        if single:
            e = e.unsqueeze(0)
        if e.dim() != 2 or e.shape[1] != self.embedding_dim:
            raise RouterError(f"task embedding must be ({self.embedding_dim},) or (B, {self.embedding_dim}), "
                              f"got {tuple(e.shape)}")
        return e, single

    # ------------------------------------------------ numpy fast path (batch 1)
    def _numpy_state(self) -> dict:
        """Numpy copies of the gate and cold-start state, rebuilt whenever any of them changes.

        Routing one task through torch costs ~0.1 ms of per-op overhead; the same maths
        in numpy on cached weights is several times faster. Parameter ``_version``
        counters catch in-place optimiser updates.
        """
        params = self.__dict__.get("_np_params")
        if params is None:
            params = self.__dict__["_np_params"] = list(self.parameters())
        key = [p._version for p in params]
        key += [id(p) for p in params]
        key += [id(self.train_embeddings), id(self.expert_embeddings), id(self.expert_has_description)]
        if self.__dict__.get("_np_key") != key:
            lin1, lin2 = self.gating_network[0], self.gating_network[2]
            train = self.train_embeddings.detach().numpy()
            self._np = {
                "w1": lin1.weight.detach().numpy().T.copy(), "b1": lin1.bias.detach().numpy().copy(),
                "w2": lin2.weight.detach().numpy().T.copy(), "b2": lin2.bias.detach().numpy().copy(),
                "train": train.copy() if len(train) else None,
                "experts": self.expert_embeddings.numpy().copy(),
                "has": self.expert_has_description.numpy().copy(),
                "any_desc": bool(self.expert_has_description.any()),
            }
            self._extra_numpy_state(self._np)
            self.__dict__["_np_key"] = key
        return self._np

    def _extra_numpy_state(self, state: dict) -> None:
        pass

    def _numpy_probabilities(self, e: np.ndarray, use_fallback: bool) -> tuple[np.ndarray, bool]:
        """(N,) routing distribution for one embedding and whether the cold-start rule fired."""
        st = self._numpy_state()
        h = e @ st["w1"]
        h += st["b1"]
        np.maximum(h, 0.0, out=h)
        logits = h @ st["w2"]
        logits += st["b2"]
        if use_fallback and st["any_desc"]:
            norm = e / max(float(np.sqrt(e @ e)), 1e-12)
            best = float((st["train"] @ norm).max()) if st["train"] is not None else -1.0
            if best < self.cold_start_threshold:
                sims = np.where(st["has"], (st["experts"] @ norm) / COLD_START_TEMPERATURE, -np.inf)
                sims = np.exp(sims - sims.max())
                return (sims / sims.sum()).astype(np.float32), True
        logits = np.exp(logits - logits.max())
        return logits / logits.sum(), False

    def availability_mask(self, available_skills) -> np.ndarray | None:
        """(N,) bool mask from expert indices or a bool mask (paper 3.4 ``available_skills``)."""
        if available_skills is None:
            return None
        a = np.asarray(available_skills)
        if a.dtype == bool:
            if a.shape != (self.num_experts,):
                raise RouterError(f"available_skills mask must have {self.num_experts} entries, got {a.shape}")
            mask = a.copy()
        else:
            mask = np.zeros(self.num_experts, dtype=bool)
            idx = a.astype(np.int64).reshape(-1)
            if len(idx) and (idx.min() < 0 or idx.max() >= self.num_experts):
                raise RouterError(f"available_skills indices must be in [0, {self.num_experts})")
            mask[idx] = True
        if not mask.any():
            raise RouterError("available_skills is empty: no skill to route to")
        return mask

    def logits(self, task_embedding) -> torch.Tensor:
        e, _ = self._batch(task_embedding)
        return self.gating_network(e)

    def set_expert_descriptions(self, embeddings: Sequence[Any]) -> None:
        """Per expert, an (m_i, D) array of its task-description embeddings (or None/empty).

        Their normalised mean is what the cold-start fallback compares unseen tasks to.
        """
        if len(embeddings) != self.num_experts:
            raise RouterError(f"need description embeddings for {self.num_experts} experts, got {len(embeddings)}")
        means = torch.zeros(self.num_experts, self.embedding_dim)
        has = torch.zeros(self.num_experts, dtype=torch.bool)
        for i, emb in enumerate(embeddings):
            if emb is None or len(emb) == 0:
                continue
            e = torch.as_tensor(np.asarray(emb, dtype=np.float32)).reshape(-1, self.embedding_dim)
            means[i] = F.normalize(F.normalize(e, dim=-1).mean(0), dim=0)
            has[i] = True
        self.expert_embeddings, self.expert_has_description = means, has

    def max_training_similarity(self, task_embedding) -> torch.Tensor:
        """(B,) highest cosine similarity to any training description (-1 if untrained)."""
        e, _ = self._batch(task_embedding)
        if self.train_embeddings.shape[0] == 0:
            return torch.full((e.shape[0],), -1.0)
        return (F.normalize(e, dim=-1) @ self.train_embeddings.T).max(dim=1).values

    def is_unseen(self, task_embedding) -> torch.Tensor:
        """(B,) True where the cold-start fallback applies (needs skill descriptions)."""
        if not bool(self.expert_has_description.any()):
            e, _ = self._batch(task_embedding)
            return torch.zeros(e.shape[0], dtype=torch.bool)
        return self.max_training_similarity(task_embedding) < self.cold_start_threshold

    def similarity_probabilities(self, task_embedding) -> torch.Tensor:
        """(B, N) softmax of cosine similarity to each expert's descriptions (the fallback)."""
        e, _ = self._batch(task_embedding)
        sims = F.normalize(e, dim=-1) @ self.expert_embeddings.T
        sims = sims.masked_fill(~self.expert_has_description, float("-inf"))
        return torch.softmax(sims / COLD_START_TEMPERATURE, dim=-1)

    # ---------------------------------------------------------------- training
    def _pairs_to_tensors(self, pairs, encoder) -> tuple[torch.Tensor, torch.Tensor]:
        if (isinstance(pairs, tuple) and len(pairs) == 2 and isinstance(pairs[1], (np.ndarray, torch.Tensor, list))
                and not isinstance(pairs[0], str) and len(pairs[0]) == len(pairs[1])):
            inputs, labels = pairs  # (embeddings or descriptions, labels)
        else:
            pairs = list(pairs)
            if not pairs:
                raise RouterError("train_router needs at least one (task, expert index) pair")
            inputs, labels = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(inputs) and isinstance(inputs[0], str):
            if encoder is None:
                from .encoder import get_text_encoder

                encoder = get_text_encoder()
            inputs = encoder.encode(list(inputs))
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if x.dim() != 2 or x.shape[1] != self.embedding_dim or len(x) != len(y):
            raise RouterError(f"expected {len(y)} embeddings of dim {self.embedding_dim}, got {tuple(x.shape)}")
        if len(y) == 0 or int(y.min()) < 0 or int(y.max()) >= self.num_experts:
            raise RouterError(f"expert indices must be in [0, {self.num_experts}), got range "
                              f"[{int(y.min()) if len(y) else '-'}, {int(y.max()) if len(y) else '-'}]")
        return x, y

    def _losses(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def train_router(self, pairs, *, encoder=None, epochs: int = 200, lr: float = 3e-3, batch_size: int = 64,
                     seed: int = 0, load_balance_weight: float | None = None, progress: bool = False,
                     num_threads: int | None = 1) -> RouterTrainingResult:
        """Fit the gate on (task description or embedding, expert index) pairs.

        ``pairs`` is a sequence of ``(text_or_embedding, index)`` or a tuple
        ``(embeddings (M, D), labels (M,))``. Loss = task loss + ``load_balance_weight`` x
        balance loss (the router's configured weight unless overridden). The training
        embeddings are remembered for the cold-start novelty test.
        """
        x, y = self._pairs_to_tensors(pairs, encoder)
        from ..training.residual import torch_threads

        with torch_threads(num_threads):
            return self._fit(x, y, epochs, lr, batch_size, seed, load_balance_weight, progress)

    def _fit(self, x, y, epochs, lr, batch_size, seed, load_balance_weight, progress) -> RouterTrainingResult:
        weight = self.load_balance_weight if load_balance_weight is None else float(load_balance_weight)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        self.train()
        iterator = range(epochs)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc=f"train {self.kind} router", unit="epoch")
        task_loss = balance = torch.tensor(0.0)
        for _ in iterator:
            perm = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), batch_size):
                idx = perm[start:start + batch_size]
                task_loss, balance = self._losses(self.gating_network(x[idx]), y[idx])
                loss = task_loss + weight * balance
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.eval()
        self.train_embeddings = torch.unique(F.normalize(x, dim=-1), dim=0)
        with torch.no_grad():
            accuracy = float((self.gating_network(x).argmax(-1) == y).float().mean())
        return RouterTrainingResult(epochs, float(task_loss.detach()), float(balance.detach()), accuracy,
                                    self.utilisation(x, use_fallback=False).tolist())

    def utilisation(self, task_embeddings, use_fallback: bool = True) -> np.ndarray:
        """Share of all expert activations each expert receives on these tasks (sums to 1)."""
        dense = self.dense_weights(task_embeddings, use_fallback=use_fallback)
        counts = (dense > 0).sum(0).double().numpy()
        return counts / max(counts.sum(), 1.0)

    def dense_weights(self, task_embeddings, use_fallback: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def routing_config(self) -> dict:
        return {"num_experts": self.num_experts, "embedding_dim": self.embedding_dim, "hidden": self.hidden,
                "load_balance_weight": self.load_balance_weight, "cold_start_threshold": self.cold_start_threshold}

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``router.json`` + ``router.safetensors`` (atomically replaced)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"gate.{k}": v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        tensors["train_embeddings"] = self.train_embeddings.contiguous()
        tensors["expert_embeddings"] = self.expert_embeddings.contiguous()
        tensors["expert_has_description"] = self.expert_has_description.to(torch.uint8).contiguous()
        meta = {"kind": self.kind, "config": self.routing_config(), "expert_ids": self.expert_ids, "format_version": 1}
        for name, writer in ((ROUTER_WEIGHTS_FILE, lambda p: save_file(tensors, p)),
                             (ROUTER_CONFIG_FILE, lambda p: Path(p).write_text(json.dumps(meta, indent=2) + "\n"))):
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
            os.close(fd)
            writer(tmp)
            os.replace(tmp, directory / name)
        return directory


class MoESkillRouter(_RouterBase):
    """Top-k softmax gating over skills (paper 3.4) with Switch load balancing."""

    kind = "topk"

    def __init__(self, num_experts: int = 16, embedding_dim: int = 384, top_k: int = 3, hidden: int = 256,
                 load_balance_weight: float = 0.01, cold_start_threshold: float = DEFAULT_COLD_START_THRESHOLD,
                 expert_ids: Sequence[str] | None = None, seed: int | None = None):
        super().__init__(num_experts, embedding_dim, hidden, load_balance_weight, cold_start_threshold,
                         expert_ids, seed)
        if not isinstance(top_k, int) or not 1 <= top_k <= num_experts:
            raise RouterError(f"top_k must be in [1, num_experts={num_experts}], got {top_k!r}")
        self.top_k = top_k

    def routing_config(self) -> dict:
        return {**super().routing_config(), "top_k": self.top_k}

    def probabilities(self, task_embedding, use_fallback: bool = True) -> torch.Tensor:
        """(B, N) routing distribution: the gate's softmax, or similarity for unseen tasks."""
        e, _ = self._batch(task_embedding)
        probs = torch.softmax(self.gating_network(e), dim=-1)
        if use_fallback:
            unseen = self.is_unseen(e)
            if bool(unseen.any()):
                probs = torch.where(unseen[:, None], self.similarity_probabilities(e), probs)
        return probs

    def load_balance_loss(self, logits: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
        """Balance loss of a batch of gate logits, with f_i counted over the top-k dispatches."""
        probs = torch.softmax(logits, dim=-1)
        k = top_k or self.top_k
        mask = torch.zeros_like(probs).scatter_(1, probs.topk(k, dim=-1).indices, 1.0)
        return load_balance_loss(probs, mask)

    def _losses(self, logits, labels):
        return F.cross_entropy(logits, labels), self.load_balance_loss(logits)

    def dispatch(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Differentiable ``(dense weights, dispatch mask, probabilities)`` for joint training."""
        probs = torch.softmax(logits, dim=-1)
        values, indices = probs.topk(self.top_k, dim=-1)
        dense = torch.zeros_like(probs).scatter(1, indices, values / values.sum(-1, keepdim=True))
        mask = torch.zeros_like(probs).scatter(1, indices, 1.0)
        return dense, mask, probs

    def route(self, task_embedding, top_k: int | None = None, use_fallback: bool = True,
              available_skills=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, weights)``: top-k experts and their renormalised weights (sum to 1).

        A 1-D embedding gives ``(k,)`` tensors, a ``(B, D)`` batch ``(B, k)`` tensors.
        ``available_skills`` (indices or a bool mask) restricts the choice to installed
        skills; k shrinks if fewer are available.
        """
        mask = self.availability_mask(available_skills)
        k = min(top_k or self.top_k, self.num_experts if mask is None else int(mask.sum()))
        if isinstance(task_embedding, np.ndarray) and task_embedding.ndim == 1 \
                and task_embedding.shape[0] == self.embedding_dim:
            probs, _ = self._numpy_probabilities(task_embedding.astype(np.float32, copy=False), use_fallback)
            if mask is not None:
                probs = np.where(mask, probs, -1.0)
            order = np.argsort(-probs, kind="stable")[:k]
            values = probs[order]
            return torch.from_numpy(order.astype(np.int64)), torch.from_numpy(
                (values / max(float(values.sum()), 1e-30)).astype(np.float32))
        e, single = self._batch(task_embedding)
        with torch.no_grad():
            probs = self.probabilities(e, use_fallback=use_fallback)
        if mask is not None:
            probs = probs.masked_fill(~torch.from_numpy(mask), -1.0)
        values, indices = torch.topk(probs, k, dim=-1)
        weights = values / values.sum(-1, keepdim=True).clamp_min(1e-30)
        return (indices[0], weights[0]) if single else (indices, weights)

    @torch.no_grad()
    def dense_weights(self, task_embeddings, use_fallback: bool = True) -> torch.Tensor:
        indices, weights = self.route(self._batch(task_embeddings)[0], use_fallback=use_fallback)
        return torch.zeros(indices.shape[0], self.num_experts).scatter_(1, indices, weights)


class DualGatingRouter(_RouterBase):
    """FedVLA DGMoE: token-side soft scores, expert-side learnable thresholds.

    ``score = softmax(g(e) [+ prev_scores])``; expert i is active when
    ``score_i > lambda * W_e[i]`` with ``W_e = sigmoid(theta)`` learnable (the best expert
    is always active so every task gets a skill). Active scores are renormalised, so the
    number of skills varies with how clear-cut the task is. Thresholds are trained with a
    binary "should expert i answer this task" loss on a sigmoid relaxation of the gate.
    """

    kind = "dgmoe"
    #: temperature of the sigmoid relaxation of ``score > threshold`` during training
    THRESHOLD_TEMPERATURE = 0.05

    def __init__(self, num_experts: int = 16, embedding_dim: int = 384, hidden: int = 256, lam: float = 0.5,
                 load_balance_weight: float = 0.01, cold_start_threshold: float = DEFAULT_COLD_START_THRESHOLD,
                 max_experts: int | None = None, expert_ids: Sequence[str] | None = None, seed: int | None = None):
        super().__init__(num_experts, embedding_dim, hidden, load_balance_weight, cold_start_threshold,
                         expert_ids, seed)
        if not 0.0 < lam <= 1.0:
            raise RouterError(f"lam (DGMoE lambda) must be in (0, 1], got {lam}")
        if max_experts is not None and not 1 <= max_experts <= num_experts:
            raise RouterError(f"max_experts must be in [1, {num_experts}], got {max_experts}")
        self.lam = float(lam)
        self.max_experts = max_experts
        # Start every threshold at lambda * W_e = 1/N: experts above the average score answer.
        w0 = min(0.5, 1.0 / (num_experts * self.lam))
        self.threshold_logits = nn.Parameter(torch.full((num_experts,), math.log(w0 / (1.0 - w0))))

    def routing_config(self) -> dict:
        return {**super().routing_config(), "lam": self.lam, "max_experts": self.max_experts}

    def _extra_numpy_state(self, state: dict) -> None:
        state["thresholds"] = self.thresholds().detach().numpy().copy()

    def thresholds(self) -> torch.Tensor:
        """``lambda * W_e`` per expert."""
        return self.lam * torch.sigmoid(self.threshold_logits)

    def scores(self, task_embedding, prev_scores: torch.Tensor | None = None, use_fallback: bool = True
               ) -> torch.Tensor:
        """Token-side soft scores (B, N); ``prev_scores`` is the residual from a previous gate."""
        e, _ = self._batch(task_embedding)
        logits = self.gating_network(e)
        if prev_scores is not None:
            logits = logits + torch.as_tensor(prev_scores, dtype=logits.dtype)
        s = torch.softmax(logits, dim=-1)
        if use_fallback:
            unseen = self.is_unseen(e)
            if bool(unseen.any()):
                s = torch.where(unseen[:, None], self.similarity_probabilities(e), s)
        return s

    def active_mask(self, scores: torch.Tensor) -> torch.Tensor:
        active = scores > self.thresholds()
        active.scatter_(1, scores.argmax(-1, keepdim=True), True)
        if self.max_experts is not None:
            capped = torch.zeros_like(active).scatter_(
                1, scores.masked_fill(~active, -1.0).topk(self.max_experts, dim=-1).indices, True)
            active &= capped
        return active

    @torch.no_grad()
    def dense_weights(self, task_embeddings, use_fallback: bool = True, prev_scores=None,
                      available_skills=None) -> torch.Tensor:
        """(B, N) gate values ``g_i``: renormalised scores of active experts, 0 for the rest."""
        s = self.scores(task_embeddings, prev_scores=prev_scores, use_fallback=use_fallback)
        mask = self.availability_mask(available_skills)
        if mask is not None:
            s = s * torch.from_numpy(mask).to(s.dtype)
        gated = s * self.active_mask(s)
        return gated / gated.sum(-1, keepdim=True)

    def load_balance_loss(self, logits: torch.Tensor) -> torch.Tensor:
        s = torch.softmax(logits, dim=-1)
        return load_balance_loss(s, self.active_mask(s.detach()).to(s.dtype))

    def _losses(self, logits, labels):
        s = torch.softmax(logits, dim=-1)
        target = F.one_hot(labels, self.num_experts).to(s.dtype)
        expert_side = F.binary_cross_entropy_with_logits((s - self.thresholds()) / self.THRESHOLD_TEMPERATURE, target)
        task = F.cross_entropy(logits, labels) + expert_side
        return task, load_balance_loss(s, self.active_mask(s.detach()).to(s.dtype))

    def dispatch(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Differentiable ``(dense weights, activation mask, scores)`` for joint training."""
        s = torch.softmax(logits, dim=-1)
        mask = self.active_mask(s.detach()).to(s.dtype)
        gated = s * mask
        return gated / gated.sum(-1, keepdim=True), mask, s

    def route(self, task_embedding, use_fallback: bool = True, prev_scores=None, available_skills=None):
        """``(indices, weights)`` of the active experts, best first, weights summing to 1.

        A 1-D embedding gives two 1-D tensors of variable length; a batch gives two lists.
        ``available_skills`` (indices or a bool mask) restricts routing to installed skills.
        """
        if prev_scores is None and isinstance(task_embedding, np.ndarray) and task_embedding.ndim == 1 \
                and task_embedding.shape[0] == self.embedding_dim:
            s, _ = self._numpy_probabilities(task_embedding.astype(np.float32, copy=False), use_fallback)
            mask = self.availability_mask(available_skills)
            if mask is not None:
                s = s * mask
            active = s > self._np["thresholds"]
            active[int(np.argmax(s))] = True
            idx = np.flatnonzero(active)
            if self.max_experts is not None and len(idx) > self.max_experts:
                idx = idx[np.argsort(-s[idx], kind="stable")[:self.max_experts]]
            idx = idx[np.argsort(-s[idx], kind="stable")]
            w = s[idx] / s[idx].sum()
            return torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(w.astype(np.float32))
        e, single = self._batch(task_embedding)
        dense = self.dense_weights(e, use_fallback=use_fallback, prev_scores=prev_scores,
                                   available_skills=available_skills)
        out_i, out_w = [], []
        for row in dense:  # per task, not per control step: the count differs per row
            idx = torch.nonzero(row > 0).flatten()
            order = torch.argsort(row[idx], descending=True)
            out_i.append(idx[order])
            out_w.append(row[idx[order]])
        return (out_i[0], out_w[0]) if single else (out_i, out_w)

    def num_active(self, task_embeddings, use_fallback: bool = True) -> torch.Tensor:
        """(B,) number of experts activated per task."""
        return (self.dense_weights(task_embeddings, use_fallback=use_fallback) > 0).sum(-1)


def build_router(config, embedding_dim: int, num_experts: int | None = None,
                 expert_ids: Sequence[str] | None = None, seed: int | None = None) -> _RouterBase:
    """Router selected by ``MoERouterConfig.gating`` (``topk`` or ``dgmoe``).

    ``num_experts`` defaults to ``config.num_experts`` (pass the library size to route
    over the skills that actually exist); ``top_k`` is clipped to it.
    """
    n = num_experts if num_experts is not None else config.num_experts
    threshold = getattr(config, "cold_start_threshold", DEFAULT_COLD_START_THRESHOLD)
    if config.gating == "dgmoe":
        return DualGatingRouter(n, embedding_dim, hidden=config.hidden, lam=config.dgmoe_lambda,
                                load_balance_weight=config.load_balance_weight, cold_start_threshold=threshold,
                                expert_ids=expert_ids, seed=seed)
    if config.gating != "topk":
        raise RouterError(f"unknown gating {config.gating!r}; expected topk or dgmoe")
    return MoESkillRouter(n, embedding_dim, top_k=min(config.top_k, n), hidden=config.hidden,
                          load_balance_weight=config.load_balance_weight, cold_start_threshold=threshold,
                          expert_ids=expert_ids, seed=seed)


def load_router(directory: str | os.PathLike) -> _RouterBase:
    """Load a router written by ``router.save(directory)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path, w_path = directory / ROUTER_CONFIG_FILE, directory / ROUTER_WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise RouterError(f"{directory} holds no saved router ({ROUTER_CONFIG_FILE} + {ROUTER_WEIGHTS_FILE})")
    try:
        meta = json.loads(cfg_path.read_text())
        cls = {"topk": MoESkillRouter, "dgmoe": DualGatingRouter}[meta["kind"]]
        router = cls(**meta["config"], expert_ids=meta.get("expert_ids"))
        tensors = load_file(str(w_path))
        router.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("gate.")}, strict=True)
    except (KeyError, TypeError, json.JSONDecodeError, SafetensorError, RuntimeError) as exc:
        raise RouterError(f"{directory}: unreadable saved router ({exc.__class__.__name__}: {exc})") from None
    router.train_embeddings = tensors["train_embeddings"]
    router.expert_embeddings = tensors["expert_embeddings"]
    router.expert_has_description = tensors["expert_has_description"].bool()
    router.eval()
    return router
