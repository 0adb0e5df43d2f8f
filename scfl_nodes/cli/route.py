"""``scfl route``: route a task description to skills of the local library (paper 3.4).

The router is trained on the library's own (task description -> skill) pairs the first
time and cached in ``<library>/.router``; it is retrained automatically when the set of
skills, their versions or their descriptions change (or with ``--retrain``).
"""

from __future__ import annotations

import argparse
import json
import time


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
    from ..core.routing import TextEncoderError, get_text_encoder, library_router  # torch: after input checks
    from ..core.skills import SkillLibrary, SkillPackageError

    library = SkillLibrary(root)
    try:
        encoder = get_text_encoder(cfg.moe_router.text_encoder)
        router, manifests = library_router(library, cfg.moe_router, encoder, seed=cfg.system.seed,
                                           retrain=args.retrain)
    except (TextEncoderError, SkillPackageError) as exc:
        raise CliError(str(exc)) from None
    if router is None:
        raise CliError(f"skill library {library.root} has no skills; train one with `scfl train-skill` first")
    started = time.perf_counter()
    embedding = encoder.encode_one(args.task)
    embedded = time.perf_counter()
    indices, weights = router.route(embedding)
    elapsed_ms = (time.perf_counter() - started) * 1e3
    embed_ms, route_ms = (embedded - started) * 1e3, (time.perf_counter() - embedded) * 1e3
    cold_start = bool(router.is_unseen(embedding)[0])
    skill_ids = [manifests[int(i)].skill_id for i in indices]
    weights = [round(float(w), 4) for w in weights]
    if args.json:
        print(json.dumps({"skill_ids": skill_ids, "weights": weights, "inference_time_ms": round(elapsed_ms, 3),
                          "embedding_ms": round(embed_ms, 3), "routing_ms": round(route_ms, 3),
                          "cold_start": cold_start, "router": router.kind}))
        return 0
    how = "cold start: similarity to skill descriptions" if cold_start else f"{router.kind} router"
    print(f"task: {args.task!r} ({how}; embedding {embed_ms:.1f} ms, routing {route_ms:.3f} ms)")
    by_id = {m.skill_id: m for m in manifests}
    for sid, w in zip(skill_ids, weights):
        m = by_id[sid]
        print(f"  {sid:<24} v{m.version:<3} weight {w:.4f}  ({m.name})")
    return 0
