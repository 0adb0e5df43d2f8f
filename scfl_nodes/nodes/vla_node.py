"""vla_node: frozen base VLA inference on camera frames -> ``scfl_interfaces/BaseAction``.

Inference runs on its own thread, never in an executor callback: the image callback only
stores the newest frame (older unprocessed frames are dropped and counted), so a slow model
lowers the base-action rate but never blocks the control loop in skill_node, which always
uses the latest base action and knows its age (``BaseAction.age_ms`` and header stamp =
image stamp). Every executor callback is short, so the node spins a single-threaded executor
(no hand-off of each frame to a worker thread). What the model reads comes from its ``observation_spec`` (core/vla/interface.py):
image models get the decoded RGB frame (``sensor_msgs/Image``, or ``CompressedImage`` when
the topic ends in ``/compressed``); the low-dimensional state that goes with a frame
(``Observation``, same stamp) is paired by stamp -- required by state models, optional
proprioception for the vision policy (used when it arrives, never waited for when no state
was ever seen). The instruction comes from a parameter, the latched ``/scfl/instruction``, or
the last SkillRequest (its task description, from router_node's latched ``SkillWeights``);
the newest of the two topics wins.

A managed (lifecycle) node: *configure* loads the model and subscribes, *activate* starts the
inference thread, *deactivate* stops it, *cleanup* drops the model. ``autostart: true``
(config/nodes.yaml) takes those steps by itself; launch/scfl.launch.py sets it false and drives
the transitions through launch_ros' lifecycle events.
"""

from __future__ import annotations

import collections
import inspect
import threading
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from scfl_nodes.core.perception.image_codec import rgb_frame
from scfl_nodes.nodes.common import (
    Diagnostics,
    NodeConfigError,
    Param,
    declare_params,
    enable_dynamic_params,
    latched_qos,
    run_node,
    sensor_qos,
)

PARAMS = [
    Param("model", "scfl-metaworld-base", "base VLA name in the scfl_nodes.core.vla registry"),
    Param("backend", "torch", "inference backend of the base VLA (e.g. torch, onnxruntime)"),
    Param("device", "cpu", "torch device for torch backends"),
    Param("image_topic", "camera/camera/color/image_raw", "camera image input (sensor_msgs/Image)"),
    Param("observation_topic", "scfl/observation_state", "state input paired with images by stamp (scfl_interfaces/Observation)"),
    Param("use_observation", True, "pair frames with the low-dimensional state when the model reads one (False: never)"),
    Param("instruction", "", "task instruction; empty = take it from instruction_topic or the last SkillRequest", read_only=False),
    Param("instruction_topic", "scfl/instruction", "latched std_msgs/String with the current task instruction"),
    Param("skill_weights_topic", "scfl/skill_weights", "latched SkillWeights of router_node: the last SkillRequest's task description is the instruction"),
    Param("output_topic", "scfl/base_action", "published base actions (scfl_interfaces/BaseAction)"),
    Param("pairing_wait_ms", 200.0, "how long to wait for the state with the image's stamp before using the latest one",
          min=0.0, max=5000.0, read_only=False),
    Param("image_timeout_s", 2.0, "diagnostics WARN when no image arrived for this long", min=0.1, max=600.0, read_only=False),
    Param("torch_threads", 1, "torch intra-op threads (keep small next to the control loop)", min=1, max=64),
    Param("autostart", True, "configure and activate by itself (false: a lifecycle manager / ros2 launch does)"),
]


def load_policy(model: str, backend: str, device: str):
    """The base policy from the ISSUE 7 registry (``act(obs, instruction) -> (action, embedding)``)."""
    try:
        from scfl_nodes.core import vla
    except ImportError as exc:
        raise NodeConfigError(f"the VLA registry scfl_nodes.core.vla is not available ({exc})") from None
    loader = getattr(vla, "load_base_policy", None)
    if loader is None:
        raise NodeConfigError("scfl_nodes.core.vla has no load_base_policy() (VLA registry not installed)")
    kwargs = {}
    sig = inspect.signature(loader)
    if "backend" in sig.parameters:
        kwargs["backend"] = backend
    elif backend not in ("torch", ""):
        raise NodeConfigError(f"parameter 'backend': this VLA registry only offers torch, got {backend!r}")
    if "device" in sig.parameters:
        kwargs["device"] = device
    backends = getattr(vla, "BACKENDS", None)
    if backends and backend not in backends:
        raise NodeConfigError(f"parameter 'backend' must be one of {', '.join(backends)}; got {backend!r}")
    unavailable = getattr(vla, "BackendUnavailableError", ())
    try:
        return loader(model, **kwargs)
    except unavailable as exc:
        raise NodeConfigError(f"parameter 'backend': {exc}") from None
    except (KeyError, ValueError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise NodeConfigError(f"cannot load base VLA {model!r} with backend {backend!r}: {msg}") from None


class VlaNode(LifecycleNode):
    def __init__(self):
        super().__init__("vla_node")
        self.p = declare_params(self, PARAMS)
        import torch

        torch.set_num_threads(self.p["torch_threads"])
        self.diag = Diagnostics(self, f"vla:{self.p['model']}")
        if not self.p["autostart"]:  # (autostart: configured right below, no transient status)
            self.diag.set(Diagnostics.WARN, "unconfigured (model not loaded)")
        self.policy = None
        self._cv = threading.Condition()
        self._latest_image = None  # (stamp_ns, header, image)
        self._states: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._instruction = self.p["instruction"] or None
        self._topic_instruction = None  # last instruction_topic value (used while the parameter is empty)
        self.frames_in = self.frames_dropped = self.actions_out = 0
        self._last_image_wall = None
        self._sequence = 0
        self._stop = threading.Event()
        self._worker = None
        self._entities: list = []
        enable_dynamic_params(self, PARAMS, self.p, apply=self._on_params_changed,
                              validators={"instruction": _check_instruction})
        if self.p["autostart"]:
            # at construction, like the node before it was managed: a bad model is a start-up error (exit 2)
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise NodeConfigError(self._configure_error)
            self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        from std_msgs.msg import String
        from sensor_msgs.msg import Image

        from scfl_interfaces.msg import BaseAction, Observation, SkillWeights

        t0 = time.monotonic()
        try:
            self.policy = load_policy(self.p["model"], self.p["backend"], self.p["device"])
        except NodeConfigError as exc:
            self._configure_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            self.diag.set(Diagnostics.ERROR, f"model not loaded: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"loaded base VLA {self.p['model']} ({self.p['backend']}) in {time.monotonic() - t0:.1f} s")
        self._BaseAction = BaseAction
        group = MutuallyExclusiveCallbackGroup()
        self.spec = self.policy.observation_spec
        self._use_state = bool(self.p["use_observation"] and self.spec.uses_state)
        if self.spec.needs_state and not self._use_state:
            self._configure_error = (f"model {self.p['model']!r} needs the state on {self.p['observation_topic']}; "
                                     "set use_observation: true")
            self.get_logger().error(f"configure failed: {self._configure_error}")
            self.diag.set(Diagnostics.ERROR, self._configure_error)
            self.policy = None
            return TransitionCallbackReturn.FAILURE
        image_type = Image
        if self.p["image_topic"].endswith("/compressed"):
            from sensor_msgs.msg import CompressedImage as image_type
        self._entities = [self.create_subscription(image_type, self.p["image_topic"], self._on_image, sensor_qos(),
                                                   callback_group=group)]
        if self._use_state:
            self._entities.append(self.create_subscription(Observation, self.p["observation_topic"], self._on_state, 50,
                                                           callback_group=group))
        # always subscribed: the instruction parameter is dynamic and may be emptied at run time
        self._entities.append(self.create_subscription(String, self.p["instruction_topic"], self._on_instruction,
                                                       latched_qos(), callback_group=group))
        self._entities.append(self.create_subscription(SkillWeights, self.p["skill_weights_topic"],
                                                       lambda m: self._on_instruction_text(m.task_description),
                                                       latched_qos(), callback_group=group))
        self.pub = self.create_publisher(BaseAction, self.p["output_topic"], 10)
        self._health = self.create_timer(0.5, self._check_health, callback_group=MutuallyExclusiveCallbackGroup())
        self.diag.set(Diagnostics.OK, "configured (model loaded, not inferring)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._stop.clear()
        self._worker = threading.Thread(target=self._infer_loop, name="vla-inference", daemon=True)
        self._worker.start()
        self.diag.set(Diagnostics.WARN, f"waiting for images on {self.p['image_topic']}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.shutdown()
        self.diag.set(Diagnostics.OK, "inactive (model loaded, not inferring)")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        for sub in self._entities:
            self.destroy_subscription(sub)
        self._entities = []
        self.destroy_publisher(self.pub)
        self.destroy_timer(self._health)
        self.policy = None
        self.diag.set(Diagnostics.WARN, "unconfigured (model not loaded)")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.shutdown()
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ callbacks (cheap)
    def _on_image(self, msg) -> None:
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._cv:
            if self._latest_image is not None:
                self.frames_dropped += 1
            self._latest_image = (stamp_ns, msg.header, msg)
            self.frames_in += 1
            self._last_image_wall = time.monotonic()
            self._cv.notify_all()

    def _on_state(self, msg) -> None:
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._cv:
            self._states[stamp_ns] = np.asarray(msg.state, dtype=np.float32)
            while len(self._states) > 100:
                self._states.popitem(last=False)
            self._cv.notify_all()

    def _on_instruction(self, msg) -> None:
        self._on_instruction_text(msg.data)

    def _on_instruction_text(self, text: str) -> None:
        """instruction_topic or the last SkillRequest's task description: the newest wins."""
        if not text:
            return
        self._topic_instruction = text
        if self.p["instruction"]:
            return  # the parameter wins while it is set
        if text != self._instruction:
            self.get_logger().info(f"instruction: {text!r}")
        self._instruction = text

    def _on_params_changed(self, changed) -> None:
        if "instruction" in changed:  # the next inference uses it: one reference assignment
            self._instruction = changed["instruction"] or self._topic_instruction
            self.get_logger().info(f"instruction: {self._instruction!r}")

    # ------------------------------------------------------------------ inference thread
    def _state_for(self, stamp_ns: int):
        """The state stamped like the image; waits briefly for it, else the newest one."""
        deadline = time.monotonic() + self.p["pairing_wait_ms"] / 1000.0
        if not self.spec.needs_state and not self._states:
            return None, False  # optional proprioception that never came: do not wait for it
        with self._cv:
            while stamp_ns not in self._states and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            if stamp_ns in self._states:
                return self._states[stamp_ns], True
            return (next(reversed(self._states.values())) if self._states else None), False

    def _infer_loop(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while self._latest_image is None and not self._stop.is_set():
                    self._cv.wait(0.2)
                if self._stop.is_set():
                    return
                stamp_ns, header, msg = self._latest_image
                self._latest_image = None
            instruction = self._instruction
            if instruction is None:
                self.diag.set(Diagnostics.WARN, f"no instruction yet (parameter or {self.p['instruction_topic']})")
                continue
            try:
                state, exact = self._state_for(stamp_ns) if self._use_state else (None, False)
                if state is None and self.spec.needs_state:
                    self.diag.set(Diagnostics.WARN, f"no state on {self.p['observation_topic']} yet")
                    continue
                image = rgb_frame(msg)[None] if self.spec.image else None
                observation = self.policy.observation_from(
                    [instruction], image=image, state=None if state is None else state[None])
                t0 = time.perf_counter()
                action, embedding = self.policy.predict(observation)
                infer_ms = (time.perf_counter() - t0) * 1000.0
            except Exception as exc:  # a bad frame must not kill the node
                self.diag.set(Diagnostics.ERROR, f"inference failed: {type(exc).__name__}: {exc}")
                continue
            out = self._BaseAction()
            out.header = header
            out.instruction = instruction
            out.action = np.asarray(action, dtype=np.float32).reshape(-1).tolist()
            out.observation_embedding = np.asarray(embedding, dtype=np.float32).reshape(-1).tolist()
            out.inference_time_ms = float(infer_ms)
            now_ns = self.get_clock().now().nanoseconds
            out.age_ms = float((now_ns - stamp_ns) / 1e6)
            out.sequence = self._sequence
            out.backend = self.p["backend"]
            self._sequence += 1
            self.pub.publish(out)
            self.actions_out += 1
            self.diag.update(actions=self.actions_out, frames=self.frames_in, dropped=self.frames_dropped,
                             inference_ms=f"{infer_ms:.2f}", state_paired_exactly=exact)
            if self.diag.level != Diagnostics.OK:
                self.diag.set(Diagnostics.OK, "running")

    def _check_health(self) -> None:
        last = self._last_image_wall
        if last is not None and time.monotonic() - last > self.p["image_timeout_s"]:
            self.diag.update(seconds_since_last_image=f"{time.monotonic() - last:.1f}")
            self.diag.set(Diagnostics.WARN, f"no images on {self.p['image_topic']} for more than "
                          f"{self.p['image_timeout_s']} s")

    def shutdown(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None


def _check_instruction(value: str) -> str:
    if value and not value.strip():
        raise ValueError("parameter 'instruction' must not be blank (set '' to follow instruction_topic)")
    if len(value) > 1000:
        raise ValueError(f"parameter 'instruction' is {len(value)} characters long (at most 1000)")
    return value.strip()


def main(args=None) -> int:
    return run_node(VlaNode, "vla_node", args, threads=1)


if __name__ == "__main__":
    raise SystemExit(main())
