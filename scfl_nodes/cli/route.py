"""``scfl route``: route a task description to skills of the local library (paper 3.4).

The router is trained on the library's own (task description -> skill) pairs the first
time and cached in ``<library>/.router``; it is retrained automatically when the set of
skills, their versions or their descriptions change (or with ``--retrain``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

ROUTER_DIR = ".router"
FINGERPRINT_FILE = "library.sha256"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "route",
        help="route a task description to skills of the local library",
        description="Embed a task description with the offline MiniLM encoder and route it to skills of the "
        "local library with the configured router (top-k MoE or DGMoE); prints skill ids and weights.",
    )
    p.add_argument("task", help="task description, e.g. 'lock the door'")
    p.add_argument("--library", metavar="DIR", help="skill library root (default: skill_library.storage_path)")
    p.add_argument("--config", metavar="YAML", help="config file (default: config/scfl.yaml)")
    p.add_argument("--max-skills", type=int, metavar="K", help="top-k for topk gating (default: moe_router.top_k)")
    p.add_argument("--gating", choices=("topk", "dgmoe"), help="router type (default: moe_router.gating)")
    p.add_argument("--retrain", action="store_true", help="retrain the cached router")
    p.add_argument("--json", action="store_true", help="print one JSON object (as the cloud API returns)")
    p.set_defaults(func=run)


def library_fingerprint(manifests, gating: str, router_cfg) -> str:
    """Hash of everything the router depends on: skills, versions, descriptions, router config."""
    data = [(m.skill_id, m.version, list(m.task_descriptions)) for m in manifests]
    cfg = {k: getattr(router_cfg, k) for k in ("hidden", "load_balance_weight", "dgmoe_lambda",
                                                 "cold_start_threshold", "text_encoder")}
    return hashlib.sha256(json.dumps([data, gating, cfg], sort_keys=True).encode()).hexdigest()


def prepare_router(library, router_cfg, encoder, seed: int = 0, retrain: bool = False, progress: bool = False):
    """The cached router for ``library`` (trained and saved if missing or stale)."""
    from ..core.routing import RouterError, build_router, load_router

    manifests = library.list()
    if not manifests:
        return None, manifests
    router_dir = library.root / ROUTER_DIR
    fingerprint = library_fingerprint(manifests, router_cfg.gating, router_cfg)
    fp_file = router_dir / FINGERPRINT_FILE
    if not retrain and fp_file.is_file() and fp_file.read_text().strip() == fingerprint:
        try:
            return load_router(router_dir), manifests
        except RouterError:
            pass  # unreadable cache: retrain below
    expert_ids = [m.skill_id for m in manifests]
    router = build_router(router_cfg, encoder.embedding_dim, num_experts=len(manifests), expert_ids=expert_ids,
                          seed=seed)
    descriptions = [list(m.task_descriptions) or [m.name] for m in manifests]
    router.set_expert_descriptions([encoder.encode(d) for d in descriptions])
    pairs = [(text, i) for i, texts in enumerate(descriptions) for text in texts]
    router.train_router(pairs, encoder=encoder, epochs=200, lr=3e-3, seed=seed, progress=progress)
    router.save(router_dir)
    fp_file.write_text(fingerprint + "\n")
    return router, manifests


def run(args: argparse.Namespace) -> int:
    from . import CliError
    from ..core.config import ConfigError, expand_path, load_config

    if not args.task.strip():
        raise CliError("the task description must not be empty")
    overrides = {}
    if args.gating:
        overrides["gating"] = args.gating
    if args.max_skills is not None:
        overrides["top_k"] = args.max_skills
    try:
        cfg = load_config(args.config, overrides={"moe_router": overrides} if overrides else None)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    root = expand_path(args.library) if args.library else cfg.skill_library.path
    if not root.is_dir():
        raise CliError(f"skill library {root} does not exist; train a skill with `scfl train-skill` first")
    from ..core.routing import TextEncoderError, get_text_encoder  # torch: after input checks
    from ..core.skills import SkillLibrary, SkillPackageError

    library = SkillLibrary(root)
    try:
        encoder = get_text_encoder(cfg.moe_router.text_encoder)
        router, manifests = prepare_router(library, cfg.moe_router, encoder, seed=cfg.system.seed,
                                           retrain=args.retrain)
    except (TextEncoderError, SkillPackageError) as exc:
        raise CliError(str(exc)) from None
    if router is None:
        raise CliError(f"skill library {library.root} has no skills; train one with `scfl train-skill` first")
    started = time.perf_counter()
    embedding = encoder.encode_one(args.task)
    indices, weights = router.route(embedding)
    elapsed_ms = (time.perf_counter() - started) * 1e3
    cold_start = bool(router.is_unseen(embedding)[0])
    skill_ids = [manifests[int(i)].skill_id for i in indices]
    weights = [round(float(w), 4) for w in weights]
    if args.json:
        print(json.dumps({"skill_ids": skill_ids, "weights": weights, "inference_time_ms": round(elapsed_ms, 3),
                          "cold_start": cold_start, "router": router.kind}))
        return 0
    how = "cold start: similarity to skill descriptions" if cold_start else f"{router.kind} router"
    print(f"task: {args.task!r} ({how}, {elapsed_ms:.2f} ms)")
    by_id = {m.skill_id: m for m in manifests}
    for sid, w in zip(skill_ids, weights):
        m = by_id[sid]
        print(f"  {sid:<24} v{m.version:<3} weight {w:.4f}  ({m.name})")
    return 0
