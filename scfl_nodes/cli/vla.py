"""`scfl vla`: inspect, export and evaluate frozen base models (docs/vla.md)."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("vla", help="frozen base models: list, export to ONNX, evaluate, act")
    sub = p.add_subparsers(dest="vla_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    ls = sub.add_parser("list", help="registered models and whether they are in the local cache")
    ls.add_argument("--cache-dir", default=None, help="default: vla.cache_dir of the config")
    ls.set_defaults(func=_list)

    ex = sub.add_parser("export-onnx", help="export a model to ONNX and check parity with torch")
    ex.add_argument("model", nargs="?", default="scfl-metaworld-base", help="registry name or checkpoint directory")
    ex.add_argument("--out", required=True, help="output .onnx file (base policy) or directory (VLA)")
    ex.add_argument("--cache-dir", default=None)
    ex.add_argument("--atol", type=float, default=1e-4, help="parity tolerance torch vs onnxruntime")
    ex.set_defaults(func=_export)

    ev = sub.add_parser("eval", help="success rate of the Meta-World base policy per task")
    ev.add_argument("--model", default="scfl-metaworld-base")
    ev.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    ev.add_argument("--tasks", nargs="*", default=None)
    ev.add_argument("--episodes", type=int, default=50)
    ev.add_argument("--seed", type=int, default=12345)
    ev.set_defaults(func=_eval)


def _cache(args):
    from scfl_nodes.core.config import load_config

    return args.cache_dir or str(load_config().vla.cache_path)


def _list(args: argparse.Namespace) -> int:
    from scfl_nodes.core.vla import MODEL_REGISTRY, ModelNotFoundError
    from scfl_nodes.core.vla.registry import SHIPPED_KINDS, local_model_dir

    cache = _cache(args)
    for spec in MODEL_REGISTRY.values():
        if spec.kind in SHIPPED_KINDS:
            where = "shipped with scfl"
        else:
            try:
                where = f"cached at {local_model_dir(spec, cache)}"
            except ModelNotFoundError:
                where = f"not in {cache}"
        print(f"{spec.name:22s} {spec.hf_repo or '-':28s} {where}")
    return 0


def _export(args: argparse.Namespace) -> int:

    from scfl_nodes.cli import CliError
    from scfl_nodes.core.vla import ModelNotFoundError, load_base_policy

    try:
        policy = load_base_policy(args.model, cache_dir=_cache(args))
    except (ModelNotFoundError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    from pathlib import Path

    out = Path(args.out)
    if out.is_file():
        raise CliError(f"{out} exists; not overwriting it")
    # Every base model exports its own graph (a file for scfl policies, a directory with the
    # single decoding step for Hugging Face VLAs) and checks it against torch.
    path = policy.export_onnx(out)
    diff = policy.onnx_parity(path)
    ok = diff <= args.atol
    print(json.dumps({"onnx": str(path), "max_abs_diff": diff, "atol": args.atol, "parity": ok}))
    if not ok:
        raise CliError(f"torch and onnxruntime differ by {diff:.3g} > {args.atol}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from scfl_nodes.cli import CliError
    from scfl_nodes.core.sim import TASKS, UnknownTaskError, evaluate
    from scfl_nodes.core.vla import load_base_policy

    if args.episodes < 1:
        raise CliError("--episodes must be >= 1")
    policy = load_base_policy(args.model, backend=args.backend)
    results = {}
    for task in args.tasks or TASKS:
        try:
            results[task] = evaluate(policy, task, args.episodes, seed=args.seed, progress=True)
        except UnknownTaskError as exc:
            raise CliError(str(exc)) from None
        print(f"{task:18s} {results[task]:.2f}")
    print(json.dumps({"model": args.model, "backend": args.backend, "episodes": args.episodes, "seed": args.seed, "success": results}))
    return 0
