"""router_node: serves ``~/request_skills`` (scfl_interfaces/SkillRequest) and publishes the
chosen skills + weights on ``/scfl/skill_weights`` (latched) for skill_node.

``mode: local`` routes on the robot with the MoE gating network of :mod:`scfl_nodes.core.routing`
over the skills installed in the local :class:`~scfl_nodes.core.skills.SkillLibrary` (a saved
router from ``router_path``, or -- without one -- the router's cold-start path: cosine similarity
of the task to each skill's task descriptions). ``mode: cloud`` forwards the request to the
cloud API (``POST /api/v1/skills/request``); if the cloud is unreachable the node answers from
the local router when it can and reports WARN on /diagnostics instead of failing.
"""

from __future__ import annotations

import threading
import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from scfl_nodes.nodes.common import (
    Diagnostics,
    NodeConfigError,
    Param,
    declare_params,
    latched_qos,
    run_node,
)

PARAMS = [
    Param("mode", "local", "where routing happens", choices=("local", "cloud")),
    Param("library_path", "", "skill library root; empty = skill_library.storage_path of config_file"),
    Param("router_path", "", "directory of a saved router (router.json + router.safetensors); empty = train and cache one on the library's task descriptions"),
    Param("config_file", "", "scfl.yaml for the moe_router/skill_library sections; empty = the default config"),
    Param("top_k", 3, "skills per request when the request's max_skills <= 0", min=1, max=64),
    Param("cloud_url", "http://127.0.0.1:8000", "scfl cloud base URL (mode cloud)"),
    Param("cloud_token", "", "robot bearer token for the cloud (read-only routing calls)"),
    Param("cloud_timeout_s", 2.0, "HTTP timeout of one cloud request", min=0.1, max=120.0),
    Param("weights_topic", "scfl/skill_weights", "where the chosen skills are published (latched)"),
]


class LocalRouter:
    """Routes over the skills installed in a library (thin adapter over core.routing)."""

    def __init__(self, library, router_config, router_path: str):
        from scfl_nodes.core.routing import get_text_encoder

        self.library = library
        self.config = router_config
        self.router_path = router_path
        self.encoder = get_text_encoder(router_config.text_encoder) if router_config.text_encoder else get_text_encoder()
        self._signature = None
        self.router = None
        self.expert_ids: list[str] = []
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the router when the set of installed skills changed."""
        from scfl_nodes.core.routing import library_router, load_router

        manifests = {m.skill_id: m for m in self.library.list()}
        signature = tuple(sorted((sid, m.version) for sid, m in manifests.items()))
        if signature == self._signature:
            return
        self._signature = signature
        self.manifests = manifests
        if self.router_path:
            router = load_router(self.router_path)
            ids = router.expert_ids or []
        else:  # the same trained, cached router over the library that `scfl route` uses
            router, _ = library_router(self.library, self.config, self.encoder)
            if router is None:
                self.router, self.expert_ids = None, []
                return
            ids = router.expert_ids
        self.router, self.expert_ids = router, list(ids)

    def route(self, task: str, max_skills: int):
        self.refresh()
        if self.router is None:
            raise LookupError(f"no skills installed in {self.library.root}")
        emb = self.encoder.encode_one(task)
        if hasattr(self.router, "top_k"):
            idx, w = self.router.route(emb, top_k=min(max_skills, self.router.num_experts))
        else:  # DGMoE decides the number of skills itself
            idx, w = self.router.route(emb)
        pairs = [(self.expert_ids[int(i)], float(x)) for i, x in zip(idx.tolist(), w.tolist()) if float(x) > 0]
        pairs = [(sid, x) for sid, x in pairs if sid in self.manifests][:max_skills]
        return [p[0] for p in pairs], [p[1] for p in pairs], [int(self.manifests[p[0]].version) for p in pairs]


class RouterNode(Node):
    def __init__(self):
        super().__init__("router_node")
        from scfl_interfaces.msg import SkillWeights
        from scfl_interfaces.srv import SkillRequest

        from scfl_nodes.core.config import ConfigError, expand_path, load_config

        self.p = declare_params(self, PARAMS)
        self.diag = Diagnostics(self, "router")
        try:
            cfg = load_config(self.p["config_file"] or None)
        except ConfigError as exc:
            raise NodeConfigError(f"parameter 'config_file': {exc}") from None
        self._SkillWeights = SkillWeights
        self.local = None
        self._lock = threading.Lock()
        lib_path = expand_path(self.p["library_path"]) if self.p["library_path"] else cfg.skill_library.path
        try:
            from scfl_nodes.core.skills import SkillLibrary

            library = SkillLibrary(lib_path)
            t0 = time.monotonic()
            self.local = LocalRouter(library, cfg.moe_router, self.p["router_path"])
            self.get_logger().info(
                f"local router over {len(self.local.expert_ids)} skills in {lib_path} "
                f"({'saved router ' + self.p['router_path'] if self.p['router_path'] else 'router trained on the skills task descriptions'}, "
                f"{time.monotonic() - t0:.1f} s to load)"
            )
        except Exception as exc:
            if self.p["mode"] == "local":
                raise NodeConfigError(f"cannot build the local router: {type(exc).__name__}: {exc}") from None
            self.get_logger().warning(f"no local fallback router: {exc}")
        self.cloud = None
        if self.p["mode"] == "cloud":
            from scfl_cloud.client import CloudClient

            self.cloud = CloudClient(self.p["cloud_url"], token=self.p["cloud_token"] or None,
                                     timeout=self.p["cloud_timeout_s"])
        self.requests = 0
        self.pub = self.create_publisher(SkillWeights, self.p["weights_topic"], latched_qos())
        self.create_service(SkillRequest, "~/request_skills", self._on_request,
                            callback_group=MutuallyExclusiveCallbackGroup())
        if self.local is not None and not self.local.expert_ids and self.p["mode"] == "local":
            self.diag.set(Diagnostics.WARN, f"no skills installed in {lib_path}")
        else:
            self.diag.set(Diagnostics.OK, f"ready ({self.p['mode']})")

    def _on_request(self, request, response):
        t0 = time.perf_counter()
        max_skills = request.max_skills if request.max_skills > 0 else self.p["top_k"]
        task = request.task_description.strip()
        response.success = False
        if not task:
            response.message = "task_description is empty"
            return response
        source = self.p["mode"]
        try:
            if self.cloud is not None:
                try:
                    r = self.cloud.request_skills(task, max_skills)
                    ids, weights = list(r["skill_ids"]), [float(w) for w in r["weights"]]
                    versions = [int(v) for v in r.get("skill_versions", [0] * len(ids))]
                    self.diag.set(Diagnostics.OK, "cloud routing ok")
                except Exception as exc:
                    if self.local is None:
                        raise
                    self.diag.set(Diagnostics.WARN, f"cloud unreachable, routing locally: {exc}")
                    source = "local"
                    with self._lock:
                        ids, weights, versions = self.local.route(task, max_skills)
            else:
                with self._lock:
                    ids, weights, versions = self.local.route(task, max_skills)
        except Exception as exc:
            response.message = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"request {task!r} failed: {response.message}")
            return response
        elapsed = (time.perf_counter() - t0) * 1000.0
        response.skill_ids, response.weights, response.skill_versions = ids, weights, versions
        response.inference_time_ms = float(elapsed)
        response.source = source
        response.success = True
        response.message = f"{len(ids)} skill(s)"
        msg = self._SkillWeights(task_description=task, skill_ids=ids, skill_versions=versions, weights=weights,
                                 inference_time_ms=float(elapsed), source=source)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(msg)
        self.requests += 1
        self.diag.update(requests=self.requests, last_task=task, last_skills=",".join(ids))
        self.get_logger().info(f"{task!r} -> {', '.join(f'{i}:{w:.3f}' for i, w in zip(ids, weights))} ({source}, {elapsed:.1f} ms)")
        return response

    def shutdown(self) -> None:
        if self.cloud is not None:
            self.cloud.close()


def main(args=None) -> int:
    return run_node(RouterNode, "router_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
