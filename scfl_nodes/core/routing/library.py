"""A router over the skills of a local :class:`~scfl_nodes.core.skills.SkillLibrary`.

Experts are the library's skills (latest versions, sorted by id). The gate is trained on
the skills' own task descriptions, and each skill's descriptions also feed the
cold-start fallback. The trained router is cached in ``<library>/.router`` together
with a fingerprint of everything it depends on, and retrained when that changes.
"""

from __future__ import annotations

import hashlib
import json

ROUTER_DIR = ".router"
FINGERPRINT_FILE = "library.sha256"


def library_fingerprint(manifests, router_cfg) -> str:
    """Hash of the skills, versions, descriptions and router settings the router depends on."""
    data = [(m.skill_id, m.version, list(m.task_descriptions)) for m in manifests]
    cfg = {k: getattr(router_cfg, k) for k in ("gating", "hidden", "load_balance_weight", "dgmoe_lambda",
                                                 "cold_start_threshold", "text_encoder", "top_k")}
    return hashlib.sha256(json.dumps([data, cfg], sort_keys=True).encode()).hexdigest()


def library_router(library, router_cfg, encoder=None, *, seed: int = 0, retrain: bool = False, cache: bool = True,
                   epochs: int = 200):
    """``(router, manifests)`` for ``library``; ``(None, [])`` when it holds no skills.

    ``router.expert_ids[i]`` (== ``manifests[i].skill_id``) is the skill of expert ``i``.
    """
    from .encoder import get_text_encoder
    from .router import RouterError, build_router, load_router

    manifests = library.list()
    if not manifests:
        return None, manifests
    encoder = encoder or get_text_encoder(router_cfg.text_encoder)
    router_dir = library.root / ROUTER_DIR
    fingerprint = library_fingerprint(manifests, router_cfg)
    fp_file = router_dir / FINGERPRINT_FILE
    if cache and not retrain and fp_file.is_file() and fp_file.read_text().strip() == fingerprint:
        try:
            return load_router(router_dir), manifests
        except RouterError:
            pass  # unreadable cache: retrain below
    router = build_router(router_cfg, encoder.embedding_dim, num_experts=len(manifests),
                          expert_ids=[m.skill_id for m in manifests], seed=seed)
    descriptions = [list(m.task_descriptions) or [m.name] for m in manifests]
    router.set_expert_descriptions([encoder.encode(d) for d in descriptions])
    pairs = [(text, i) for i, texts in enumerate(descriptions) for text in texts]
    router.train_router(pairs, encoder=encoder, epochs=epochs, lr=3e-3, seed=seed)
    if cache:
        router.save(router_dir)
        fp_file.write_text(fingerprint + "\n")
    return router, manifests
