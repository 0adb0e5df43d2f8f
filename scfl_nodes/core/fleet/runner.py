"""`scfl fleet`: simulate a robot fleet end to end and compare the methods on the same episodes.

Per seed: every robot collects scripted-expert demonstrations through the frozen base
policy; each method turns those demonstrations into one policy per (robot, task); all
policies are evaluated on the same seeded episodes. Federated methods run their rounds
through the real cloud server (encrypted) or an in-process sum (plaintext reference).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from . import federation as fed
from .bank import SkillBank, train_bank, train_bc
from .policy import EvalJob, Evaluator, PolicySpec, skills_spec
from .results import make_plots, mean_std, write_json
from .robots import ROBOT_CLASSES, RobotSpec, build_fleet, demo_seed, eval_seed, robot_class
from .routing import build_routing

FEDERATED = ("fedavg_plain", "fedavg_enc", "eda_enc", "router_random", "router_similarity", "router_no_lb")
ENCRYPTED = ("fedavg_enc", "eda_enc", "router_random", "router_similarity", "router_no_lb")
ROUTER_OF = {"router_random": "random", "router_similarity": "similarity", "router_no_lb": "no_lb"}


@dataclasses.dataclass
class MethodOutcome:
    policies: dict  # (robot_id, task) -> PolicySpec
    curve: list = dataclasses.field(default_factory=list)  # per round: (robot_id, task) -> PolicySpec
    bytes_up: dict = dataclasses.field(default_factory=dict)
    train_seconds: dict = dataclasses.field(default_factory=dict)
    crypto_seconds: dict = dataclasses.field(default_factory=dict)
    trainable_params: int = 0
    rounds: int = 0
    upload_total: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)


def _count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


class FleetRun:
    """One fleet experiment (all seeds). ``log`` receives human-readable progress lines."""

    def __init__(self, cfg, out_dir: str | Path, *, preset: str = "custom", progress: bool = True,
                 log: Callable[[str], None] = print, preset_note: str = "", curve_methods=None,
                 training_draw: int = 0):
        from scfl_nodes.core.sim import check_task

        for t in cfg.tasks:
            check_task(t)
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.preset = preset
        self.progress = progress
        self.log = log
        self.preset_note = preset_note
        self.robots: list[RobotSpec] = build_fleet(cfg)
        # A robot's demonstration and training seeds come from its place in the whole fleet, so a
        # run over a subset of the robots (bench/bench_fleet_seed.py) trains each exactly as here.
        self.fleet_index = {r.robot_id: i for i, r in enumerate(self.robots)}
        # Another draw of every training seed (the skills' mini-batch order, BC's init too) with the
        # same demonstrations, initial skill bank and evaluation episodes: how much of a cell is
        # the training draw (0 = the benchmark's; bench_fleet_seed.py --training-draws).
        self.training_draw = int(training_draw)
        self.methods = list(cfg.methods)
        # Success-vs-round costs an evaluation per round: only for the curves worth plotting.
        if curve_methods is None and not cfg.round_curve:
            curve_methods = ()
        elif curve_methods is None:
            curve_methods = {"local", "fedavg_enc", "eda_enc"} if "fedavg_enc" in self.methods else {"local", "fedavg_plain", "eda_enc"}
        self.curve_methods = set(curve_methods)
        self.aggregation_weights: dict = {}  # seed 0: method -> receiver -> skill -> contributor -> weight
        self.demo_success: dict[str, list[float]] = {}  # robot class -> per seed: share of successful demonstrations

    # ------------------------------------------------------------------ helpers
    def _bar(self, total, desc):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def _collect_demos(self, seed: int, base) -> dict[str, dict[str, list[dict]]]:
        from scfl_nodes.core.sim import collect_expert_episodes

        from .retargeted_demos import default_retargeter, retargeted_episodes

        retargeter = default_retargeter() if any(r.retargeted for r in self.robots) else None
        demos: dict[str, dict[str, list[dict]]] = {}
        bar = self._bar(sum(r.num_demos for r in self.robots), f"seed {seed}: demonstrations")
        for robot in self.robots:
            demos[robot.robot_id] = {}
            index = self.fleet_index[robot.robot_id]
            for task, n in zip(robot.tasks, robot.demos_per_task):
                collect = collect_expert_episodes
                if robot.retargeted:
                    collect = functools.partial(retargeted_episodes, retargeter=retargeter)
                demos[robot.robot_id][task] = collect(task, n, seed=demo_seed(seed, index, self.cfg.tasks.index(task)),
                                                      base_policy=base)
                bar.update(n)
        bar.close()
        for cls in ROBOT_CLASSES:  # how good each class's demonstrations were (retargeted replays can fail)
            flags = [bool(ep["success"]) for r in self.robots if robot_class(r) == cls
                     for eps in demos[r.robot_id].values() for ep in eps if "success" in ep]
            if flags:
                self.demo_success.setdefault(cls, []).append(float(np.mean(flags)))
        return demos

    def _task_traffic(self) -> dict[str, int]:
        traffic = {t: 0 for t in self.cfg.tasks}
        for r in self.robots:
            for t in r.tasks:
                traffic[t] += 1
        return traffic

    def _activation(self, robot: RobotSpec, demos, routing) -> np.ndarray:
        """FedVLA's expert-activation statistics: routed weight x samples, per expert."""
        v = np.zeros(self.cfg.num_experts)
        for task in robot.tasks:
            idx, w = routing[task]
            n = sum(len(ep["observation"]) for ep in demos[robot.robot_id][task])
            for e, wi in zip(idx, w):
                v[e] += wi * n
        return v

    def _skill_specs(self, state_of: Callable[[str], dict], routing, dims) -> dict:
        return {(r.robot_id, t): self._spec(state_of(r.robot_id), dims, routing[t]) for r in self.robots for t in r.tasks}

    def _spec(self, state, dims, route) -> PolicySpec:
        return skills_spec(state, dims, route[0], route[1], base_name=self.cfg.base_policy)

    def round_seed(self, seed: int, robot_id: str, round_index: int) -> int:
        """The seed of one robot's local training in one round (local and federated methods alike)."""
        return seed * 7919 + self.fleet_index[robot_id] * 101 + round_index + self.training_draw * 1000

    def training_seed(self, seed: int, salt: int) -> int:
        """The seed of a one-off training run (centralized: salt 5, BC: the robot's fleet index)."""
        return seed * 7919 + salt + self.training_draw * 1000

    # ------------------------------------------------------------------ methods
    def _run_local(self, seed, demos, routing, dims, init_state) -> MethodOutcome:
        cfg = self.cfg
        out = MethodOutcome({}, [{} for _ in range(cfg.rounds)], rounds=cfg.rounds)
        for robot in self.robots:
            bank = SkillBank(cfg.num_experts, **dims).load(init_state)
            out.train_seconds[robot.robot_id] = 0.0
            for r in range(cfg.rounds):
                m = train_bank(bank, demos[robot.robot_id], routing, epochs=cfg.local_epochs, seed=self.round_seed(seed, robot.robot_id, r),
                               lr_schedule=cfg.lr_schedule)
                out.train_seconds[robot.robot_id] += m["train_seconds"]
                state = bank.state()
                for t in robot.tasks:
                    out.curve[r][(robot.robot_id, t)] = self._spec(state, dims, routing[t])
            out.policies.update({k: v for k, v in out.curve[-1].items() if k[0] == robot.robot_id})
            out.bytes_up[robot.robot_id] = 0
        return out

    def _run_centralized(self, seed, demos, routing, dims, init_state) -> MethodOutcome:
        cfg = self.cfg
        pooled: dict[str, list] = {t: [] for t in cfg.tasks}
        upload = {}
        for robot in self.robots:
            nbytes = 0
            for t, eps in demos[robot.robot_id].items():
                pooled[t] += eps
                nbytes += sum(ep[k].nbytes for ep in eps for k in ("observation", "base_action", "expert_action"))
            upload[robot.robot_id] = nbytes
        bank = SkillBank(cfg.num_experts, **dims).load(init_state)
        m = train_bank(bank, pooled, routing, epochs=cfg.rounds * cfg.local_epochs, seed=self.training_seed(seed, 5),
                       lr_schedule=cfg.lr_schedule)
        state = bank.state()
        out = MethodOutcome(self._skill_specs(lambda _r: state, routing, dims), rounds=0)
        out.upload_total = upload
        out.extra["cloud_train_seconds"] = m["train_seconds"]
        return out

    def _run_bc(self, seed, demos) -> MethodOutcome:
        cfg = self.cfg
        out = MethodOutcome({})
        for robot in self.robots:
            eps = [ep for t in robot.tasks for ep in demos[robot.robot_id][t]]
            # BC keeps a constant lr: measured better for BC than cosine (docs/fleet.md, "Training schedule")
            net, m = train_bc(eps, hidden=cfg.skill_hidden, epochs=cfg.rounds * cfg.local_epochs,
                              seed=self.training_seed(seed, self.fleet_index[robot.robot_id]))
            state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
            for t in robot.tasks:
                out.policies[(robot.robot_id, t)] = PolicySpec("bc", state=state, dims=dict(net.dims))
            out.train_seconds[robot.robot_id] = m["train_seconds"]
            out.bytes_up[robot.robot_id] = 0
            out.trainable_params = _count_params(net)
        return out

    def _samples(self, robot: RobotSpec, demos, routing, expert: int | None = None) -> int:
        """A robot's training samples (through ``expert`` only, when given): FedAvg's n_k."""
        return int(sum(len(ep["observation"]) for t in robot.tasks if expert is None or expert in routing[t][0]
                       for ep in demos[robot.robot_id][t]))

    def _strategy(self, method: str, demos, routing):
        from scfl_nodes.core.federation import ExpertDrivenAggregation, FedAvg

        if method == "eda_enc":
            return ExpertDrivenAggregation(clip=self.cfg.clip, secure_masks=True)
        # The fleet operator's sample_cap: the largest robot's sample count (weights stay <= 1
        # and keep the most quantization precision; it does not change the weighted mean).
        cap = max(self._samples(r, demos, routing) for r in self.robots)
        return FedAvg(clip=self.cfg.clip, sample_weighted=self.cfg.weighting == "samples", sample_cap=cap,
                      secure_masks=True)  # take part in secure aggregation where the cloud runs it (>= 3 robots)

    def _federation(self, method, strategy, cloud_env):
        """The method's FleetFederation: the real cloud + encryption, or the in-process plaintext sum."""
        from scfl_nodes.core.federation.codecs import EncryptedCodec, PlainCodec
        from scfl_nodes.core.federation.inprocess import InProcessCloud

        ids = [r.robot_id for r in self.robots]
        plain = fed.FleetFederation(InProcessCloud(), strategy, {r: PlainCodec() for r in ids}, {}, run_tag=method)
        if method not in ENCRYPTED:
            return plain
        cloud, fleet_key, creds = cloud_env
        codecs = {r: EncryptedCodec(fleet_key, creds[r][0], num_clients=len(ids)) for r in ids}
        return fed.FleetFederation(cloud.client, strategy, codecs, {r: creds[r][1] for r in ids},
                                   run_tag=f"{self.preset}-{time.time_ns()}.{method}", reference=plain)

    def _run_federated(self, method, seed, demos, routing, dims, init_state, cloud_env) -> MethodOutcome:
        cfg = self.cfg
        eda = method == "eda_enc"
        out = MethodOutcome({}, rounds=cfg.rounds)
        robot_experts = {r.robot_id: sorted({e for t in r.tasks for e in routing[t][0]}) for r in self.robots}
        activations = {r.robot_id: self._activation(r, demos, routing) for r in self.robots}
        slots = fed.slot_tensors(activations, list(init_state)) if eda else None
        starts = {r.robot_id: init_state for r in self.robots}
        out.train_seconds = {r.robot_id: 0.0 for r in self.robots}
        bank = SkillBank(cfg.num_experts, **dims)
        strategy = self._strategy(method, demos, routing)
        federation = self._federation(method, strategy, cloud_env)
        bar = self._bar(cfg.rounds, f"seed {seed}: {method} rounds")
        try:
            for r in range(cfg.rounds):
                updates = {}
                for robot in self.robots:
                    rid = robot.robot_id
                    bank.load(starts[rid])
                    m = train_bank(bank, demos[rid], routing, epochs=cfg.local_epochs, seed=self.round_seed(seed, rid, r),
                                   proximal_mu=cfg.proximal_mu, lr_schedule=cfg.lr_schedule)
                    out.train_seconds[rid] += m["train_seconds"]
                    trained = bank.state()
                    if eda:
                        updates[rid] = {"bank": dict(parent=starts[rid], new=trained, activation=activations[rid],
                                                     slot_tensors=slots, num_samples=self._samples(robot, demos, routing))}
                    else:
                        updates[rid] = {f"skill-{e}": dict(parent=fed.expert_tensors(starts[rid], e),
                                                           new=fed.expert_tensors(trained, e),
                                                           num_samples=self._samples(robot, demos, routing, e))
                                        for e in robot_experts[rid]}
                installed = federation.round(r, updates)
                for rid, objects in installed.items():
                    if eda:
                        starts[rid] = objects["bank"]
                    else:
                        state = starts[rid]
                        for e in robot_experts[rid]:
                            state = fed.with_expert(state, e, objects[f"skill-{e}"])
                        starts[rid] = state
                out.curve.append(self._skill_specs(lambda rid: starts[rid], routing, dims))
                bar.update(1)
        finally:
            bar.close()
            federation.close()
        out.policies = out.curve[-1]
        out.extra["final_states"] = starts
        samples = {r.robot_id: {e: self._samples(r, demos, routing, e) for e in robot_experts[r.robot_id]} for r in self.robots}
        out.extra["aggregation_weights"] = fed.aggregation_weights(
            samples, activations if eda else None, sample_weighted=self.cfg.weighting == "samples")
        out.bytes_up = federation.bytes_up
        out.crypto_seconds = federation.crypto_seconds if method in ENCRYPTED else {}
        if federation.reference is not None:
            out.extra["max_abs_error_vs_plaintext"] = federation.max_abs_error
            out.extra["quantization_bound"] = self._quantization_bound(strategy, demos, routing)
        return out

    def _quantization_bound(self, strategy, demos, routing) -> float:
        """Largest error fixed-point encoding may add to an installed value (half a step per
        summand, divided by the (weighted) count; EDA: per slot, weights <= 1)."""
        from scfl_nodes.core.federation import FedAvg

        step = 2.0 ** -15
        if not isinstance(strategy, FedAvg):
            return 4 * step  # EDA: a few steps over the slot sums
        if not strategy.sample_weighted:
            return step  # half a step per summand / count, plus float32 rounding
        worst = 0.0
        for e in range(self.cfg.num_experts):
            ns = [self._samples(r, demos, routing, e) for r in self.robots if any(e in routing[t][0] for t in r.tasks)]
            if ns:
                # numerator: half a step per upload over sum_k w_k; the quantized sum_k w_k adds as much again
                worst = max(worst, 2 * len(ns) * (step / 2) * strategy.sample_cap / sum(ns))
        return worst + 1e-6  # + float32 rounding of the installed weights

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict:
        import torch

        from scfl_nodes.core.vla import load_base_policy

        cfg = self.cfg
        t_start = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(1)
        base = load_base_policy(cfg.base_policy)
        need_cloud = any(m in ENCRYPTED for m in self.methods)
        per_seed: list[dict] = []
        accounting: dict[str, dict] = {m: {} for m in self.methods}
        utilisation: dict[str, list] = {}
        routing_info: dict[str, dict] = {}
        checks: dict = {}
        timings = {"demos": 0.0, "training_and_federation": 0.0, "evaluation": 0.0}
        curve_eps = max(5, cfg.eval_episodes // 10)  # intermediate rounds: a cheaper, noisier estimate
        cloud_cm = cloud_env = None
        if need_cloud:
            from scfl_nodes.core.crypto import generate_fleet_keys

            from .cloud import FleetCloud

            cloud_cm = FleetCloud()
            cloud = cloud_cm.__enter__()
            fleet_key = generate_fleet_keys(backend=cfg.encryption)
            robot_creds = cloud.register_fleet(fleet_key, [r.robot_id for r in self.robots])
            cloud_env = (cloud, fleet_key, robot_creds)
            self.log(f"cloud server up at {cloud.url} (SQLite in a temp dir), {len(self.robots)} robots registered")
        try:
            with Evaluator(cfg.workers) as evaluator:
                for seed in range(cfg.seeds):
                    t0 = time.perf_counter()
                    demos = self._collect_demos(seed, base)
                    timings["demos"] += time.perf_counter() - t0
                    obs_dim = int(next(iter(next(iter(demos.values())).values()))[0]["observation"].shape[1])
                    action_dim = int(next(iter(next(iter(demos.values())).values()))[0]["base_action"].shape[1])
                    dims = {"obs_dim": obs_dim, "action_dim": action_dim, "hidden": cfg.skill_hidden}
                    init_state = SkillBank(cfg.num_experts, **dims, seed=seed).state()
                    t0 = time.perf_counter()
                    traffic = self._task_traffic()
                    routings = {}
                    for variant in {"learned"} | {ROUTER_OF[m] for m in self.methods if m in ROUTER_OF}:
                        routings[variant], info = build_routing(
                            variant, list(cfg.tasks), traffic, num_experts=cfg.num_experts, top_k=cfg.top_k,
                            load_balance_weight=cfg.load_balance_weight, seed=seed)
                        if seed == 0:
                            routing_info[variant] = info
                    outcomes: dict[str, MethodOutcome] = {}
                    for method in self.methods:
                        routing = routings[ROUTER_OF.get(method, "learned")]
                        if method in ("base", "expert"):  # nothing to train: the frozen base / the demonstrator
                            outcomes[method] = MethodOutcome({(r.robot_id, t): PolicySpec(method, base_name=cfg.base_policy) for r in self.robots for t in r.tasks})
                        elif method == "local":
                            outcomes[method] = self._run_local(seed, demos, routing, dims, init_state)
                        elif method == "centralized":
                            outcomes[method] = self._run_centralized(seed, demos, routing, dims, init_state)
                        elif method == "bc":
                            outcomes[method] = self._run_bc(seed, demos)
                        else:
                            outcomes[method] = self._run_federated(method, seed, demos, routing, dims, init_state,
                                                                   cloud_env)
                        o = outcomes[method]
                        if method not in ("base", "expert", "bc"):
                            o.trainable_params = max(
                                (len({e for t in r.tasks for e in routing[t][0]}) for r in self.robots), default=0
                            ) * SkillBank(1, **dims).expert_parameters()
                    timings["training_and_federation"] += time.perf_counter() - t0
                    if "fedavg_plain" in outcomes and "fedavg_enc" in outcomes:
                        a = outcomes["fedavg_plain"].extra["final_states"]
                        b = outcomes["fedavg_enc"].extra["final_states"]
                        diff = max(float(np.max(np.abs(a[r][k] - b[r][k]))) for r in a for k in a[r])
                        checks.setdefault("fedavg_enc_vs_plain_final_weights_max_abs_diff", []).append(diff)
                    weights = {m: o.extra["aggregation_weights"] for m, o in outcomes.items() if "aggregation_weights" in o.extra}
                    if seed == 0:
                        self.aggregation_weights = {m: {i: {f"skill-{e}": {j: round(x, 4) for j, x in ws.items()}
                                                            for e, ws in per_e.items()} for i, per_e in w.items()}
                                                    for m, w in weights.items()}
                    if "eda_enc" in weights and "fedavg_enc" in weights:  # same routing: do their weights differ at all?
                        checks.setdefault("eda_vs_fedavg_weight_max_abs_diff", []).append(
                            fed.max_weight_difference(weights["eda_enc"], weights["fedavg_enc"]))
                    for method, o in outcomes.items():
                        if "max_abs_error_vs_plaintext" in o.extra:
                            checks.setdefault("encrypted_aggregate_max_abs_error", []).append(o.extra["max_abs_error_vs_plaintext"])
                            checks.setdefault("encrypted_aggregate_quantization_bound", []).append(o.extra["quantization_bound"])
                    # ---- evaluation: every distinct policy once, same episodes for all methods
                    t0 = time.perf_counter()
                    es = eval_seed(seed)
                    jobs, keys = [], {}
                    for method, o in outcomes.items():
                        for (rid, task), spec in o.policies.items():
                            key = f"{spec.fingerprint(task)}|{es}|{cfg.eval_episodes}"
                            keys[(method, "final", rid, task)] = key
                            jobs.append(EvalJob(key, spec, task, cfg.eval_episodes, es, cfg.max_path_length))
                        for r, specs in enumerate(o.curve[:-1] if method in self.curve_methods else []):
                            for (rid, task), spec in specs.items():
                                key = f"{spec.fingerprint(task)}|{es}|{curve_eps}"
                                keys[(method, r, rid, task)] = key
                                jobs.append(EvalJob(key, spec, task, curve_eps, es, cfg.max_path_length))
                    distinct = len({j.key for j in jobs} - set(evaluator.cache))
                    bar = self._bar(distinct, f"seed {seed}: evaluation ({distinct} policy x task)")
                    rates = evaluator.run(jobs, progress=bar)
                    bar.close()
                    timings["evaluation"] += time.perf_counter() - t0
                    per_seed.append(self._seed_summary(outcomes, keys, rates))
                    for method, o in outcomes.items():
                        acc = accounting[method]
                        if o.rounds:
                            acc.setdefault("bytes_per_robot_per_round", []).append(
                                float(np.mean([o.bytes_up.get(r.robot_id, 0) for r in self.robots])) / o.rounds)
                        if o.upload_total:
                            acc.setdefault("upload_total_per_robot", []).append(float(np.mean(list(o.upload_total.values()))))
                        if o.train_seconds:
                            acc.setdefault("edge_train_seconds_per_robot", []).append(float(np.mean(list(o.train_seconds.values()))))
                        if o.crypto_seconds:
                            acc.setdefault("crypto_seconds_per_robot", []).append(float(np.mean(list(o.crypto_seconds.values()))))
                        if "cloud_train_seconds" in o.extra:
                            acc.setdefault("cloud_train_seconds", []).append(o.extra["cloud_train_seconds"])
                        acc["trainable_params"] = o.trainable_params
                    self.log(f"seed {seed} done ({time.perf_counter() - t_start:.0f} s so far)")
        finally:
            if cloud_cm is not None:
                cloud_cm.__exit__(None, None, None)
        for m in self.methods:
            if m in ROUTER_OF:
                utilisation[m] = routing_info[ROUTER_OF[m]]["utilisation"]
        if "fedavg_enc" in self.methods and "learned" in routing_info:
            utilisation["fedavg_enc"] = routing_info["learned"]["utilisation"]
        results = self._assemble(per_seed, accounting, utilisation, routing_info, checks, timings, base,
                                 time.perf_counter() - t_start, curve_eps, evaluator)
        write_json(results, self.out_dir / "results.json")
        results["plots"] = [str(p) for p in make_plots(results, self.out_dir)]
        write_json(results, self.out_dir / "results.json")
        return results

    def _seed_summary(self, outcomes, keys, rates) -> dict:
        summary = {}
        for method, o in outcomes.items():
            per_task = {}
            for task in self.cfg.tasks:
                vals = [rates[keys[(method, "final", r.robot_id, task)]] for r in self.robots if task in r.tasks]
                per_task[task] = float(np.mean(vals)) if vals else None
            by_class = {c: [rates[keys[(method, "final", r.robot_id, t)]] for r in self.robots if robot_class(r) == c
                            for t in r.tasks] for c in ROBOT_CLASSES}
            curve = []
            for rnd in range(len(o.curve) if method in self.curve_methods else 0):
                vals = []
                for task in self.cfg.tasks:
                    # the last round is the final policy, evaluated on the full episode set
                    final = rnd == len(o.curve) - 1
                    tv = [rates[keys[(method, "final" if final else rnd, r.robot_id, task)]]
                          for r in self.robots if task in r.tasks]
                    if tv:
                        vals.append(float(np.mean(tv)))
                curve.append(float(np.mean(vals)))
            per_robot = {f"{r.robot_id}:{t}": rates[keys[(method, "final", r.robot_id, t)]] for r in self.robots for t in r.tasks}
            summary[method] = {"tasks": per_task, "curve": curve, "per_robot": per_robot,
                               **{c: float(np.mean(v)) if v else None for c, v in by_class.items()}}
        return summary

    def _assemble(self, per_seed, accounting, utilisation, routing_info, checks, timings, base, runtime, curve_eps, evaluator) -> dict:
        import scfl_nodes.core.vla as vla

        cfg = self.cfg
        base_params = None
        if hasattr(base, "num_parameters"):
            base_params = int(base.num_parameters())
        else:  # the torch module behind the frozen base (ISSUE 7 keeps it for hashing)
            net = getattr(base, "net", None) or getattr(base, "_net", None)
            if net is not None:
                base_params = _count_params(net)
        text_encoder_params = 22_713_216  # all-MiniLM-L6-v2 (frozen, embeds the instruction)
        methods = {}
        for m in self.methods:
            success = {t: mean_std([s[m]["tasks"][t] for s in per_seed]) for t in cfg.tasks}
            avg = mean_std([float(np.mean([v for v in s[m]["tasks"].values() if v is not None])) for s in per_seed])
            entry = {"label": m, "success": success, "avg": avg,
                     "few_demo_success": mean_std([s[m]["few"] for s in per_seed]),
                     "rich_demo_success": mean_std([s[m]["rich"] for s in per_seed]),
                     "mixed_task_success": mean_std([s[m]["mixed"] for s in per_seed]),
                     "retargeted_success": mean_std([s[m]["retargeted"] for s in per_seed]),
                     "per_robot": {k: mean_std([s[m]["per_robot"][k] for s in per_seed]) for k in per_seed[0][m]["per_robot"]}}
            curves = [s[m]["curve"] for s in per_seed if s[m]["curve"]]
            if curves:
                entry["curve"] = [{"round": i + 1, **{k: v for k, v in mean_std([c[i] for c in curves]).items() if k != "per_seed"}}
                                  for i in range(len(curves[0]))]
            acc = {k: (float(np.mean(v)) if isinstance(v, list) else v) for k, v in accounting[m].items()}
            if base_params:
                acc["base_params"] = base_params
                acc["base_params_with_text_encoder"] = base_params + text_encoder_params
                if acc.get("trainable_params"):
                    acc["trainable_vs_base"] = acc["trainable_params"] / base_params
                    acc["trainable_vs_base_with_text_encoder"] = acc["trainable_params"] / (base_params + text_encoder_params)
            entry["accounting"] = acc
            if m in utilisation:
                entry["utilisation"] = utilisation[m]
            methods[m] = entry
        for k in list(checks):
            checks[k] = max(checks[k])
        if "encrypted_aggregate_max_abs_error" in checks:
            checks["note"] = ("encrypted_aggregate_max_abs_error: per round, the weights every robot installs from the "
                              "decrypted cloud aggregate vs those the same clients install from an in-process plaintext "
                              "sum of the same updates (quantization only; bound: encrypted_aggregate_quantization_bound). "
                              "The final-weights difference also contains training that diverges from slightly "
                              "different starting points.")
        if "eda_vs_fedavg_weight_max_abs_diff" in checks:
            checks["eda_vs_fedavg_note"] = ("eda_vs_fedavg_weight_max_abs_diff: largest difference, over every receiving "
                                            "robot, skill and contributing robot, between the weight EDA and per-skill "
                                            "FedAvg give a robot's delta (aggregation_weights: seed 0's tables); 0 would "
                                            "mean the two methods average the same way.")
        import scfl_nodes

        return {
            "meta": {
                "preset": self.preset,
                "preset_note": self.preset_note,
                "tasks": list(cfg.tasks),
                "num_seeds": cfg.seeds,
                "eval_episodes": cfg.eval_episodes,
                "curve_episodes": curve_eps,
                "max_path_length": cfg.max_path_length,
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()},
                "robots": [dataclasses.asdict(r) for r in self.robots],
                "demo_success": {c: mean_std(v) for c, v in self.demo_success.items()},
                "base_policy": cfg.base_policy,
                "runtime_s": runtime,
                "timings_s": timings,
                "eval_episodes_run": evaluator.episodes_run,
                "eval_env_steps": evaluator.steps_run,
                "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
                "scfl_version": getattr(scfl_nodes, "__version__", "0.1.0"),
                "vla_module": getattr(vla, "__name__", ""),
            },
            "methods": methods,
            "routing": routing_info,
            "checks": checks,
            **({"aggregation_weights": self.aggregation_weights} if self.aggregation_weights else {}),
        }


def run_fleet(cfg, out_dir, **kwargs) -> dict:
    """Run the fleet experiment described by ``cfg`` (a FleetConfig); writes results.json + PNGs."""
    return FleetRun(cfg, out_dir, **kwargs).run()
