"""Task-description routing for ``POST /api/v1/skills/request`` (paper Appendix A.2).

The cloud has no trained gating network for an arbitrary fleet library, so it uses the
cold-start path of the MoE router: embed the task with the shared text encoder (ISSUE 2's
``TextEncoder``, all-MiniLM-L6-v2 offline), score each skill by the best cosine similarity
to one of its task descriptions, keep the top ``max_skills`` and softmax the scores into
mixing weights. Skill embeddings are cached per (skill, descriptions) so a request costs
one sentence encoding plus a matrix product.
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

import numpy as np

TEMPERATURE = 0.1  # cosine similarities live in [-1, 1]; 0.1 gives usefully peaked weights


class TaskRouter:
    def __init__(self) -> None:
        self._encoder = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def _get_encoder(self):
        with self._lock:
            if self._encoder is None:
                from scfl_nodes.core.routing import encoder as _enc

                # the process-wide shared encoder if ISSUE 2 exposes one (loading takes seconds)
                factory = getattr(_enc, "get_text_encoder", None) or _enc.TextEncoder
                self._encoder = factory()
            return self._encoder

    def _skill_matrix(self, enc, skill_id: str, texts: tuple[str, ...]) -> np.ndarray:
        key = (skill_id, texts)
        emb = self._cache.get(key)
        if emb is None:
            emb = np.asarray(enc.encode(list(texts)), dtype=np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
            self._cache[key] = emb
        return emb

    def route(self, task_description: str, max_skills: int,
              skills: Sequence[tuple[str, Sequence[str]]]) -> tuple[list[str], list[float], float]:
        """Return (skill_ids, weights, inference_time_ms); skills = [(skill_id, descriptions)]."""
        candidates = [(sid, tuple(d for d in descs if d.strip())) for sid, descs in skills]
        candidates = [(sid, descs) for sid, descs in candidates if descs]
        enc = self._get_encoder() if candidates else None
        t0 = time.perf_counter()
        if not candidates:
            return [], [], (time.perf_counter() - t0) * 1000.0
        query = np.array(enc.encode([task_description]), dtype=np.float32)[0]
        query /= np.linalg.norm(query) + 1e-12
        scores = np.array([float(np.max(self._skill_matrix(enc, sid, descs) @ query)) for sid, descs in candidates])
        k = min(max_skills, len(candidates))
        top = np.argsort(-scores, kind="stable")[:k]
        logits = scores[top] / TEMPERATURE
        w = np.exp(logits - logits.max())
        w /= w.sum()
        elapsed = (time.perf_counter() - t0) * 1000.0
        return [candidates[i][0] for i in top], [round(float(x), 6) for x in w], elapsed
