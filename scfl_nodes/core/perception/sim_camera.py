"""The Meta-World renderer as a camera: colour + metric depth from MuJoCo, offscreen.

Rendering needs an OpenGL context without a display: ``MUJOCO_GL=egl`` (default in
scripts/env.sh) or ``MUJOCO_GL=osmesa`` (software, slower; Debian ``libosmesa6``). The GL
backend is fixed when mujoco is first imported, so set it before importing scfl.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import numpy as np

from .base import CameraError, CameraIntrinsics, CameraSource, Frame

CAMERAS = ("corner", "corner2", "corner3", "topview", "behindGripper", "gripperPOV")
# Meta-World's "corner" camera is defined with its image y axis pointing up in the world
# (xyaxes "... -0.2 -0.2 -1"), so raw renders are upside down; rotate them by 180 degrees.
_UPSIDE_DOWN = {"corner"}


class EnvRenderer:
    """Offscreen colour (+ depth) renders of one Meta-World env from a named camera.

    The one place that decides how the simulated camera looks: the ``sim`` camera source,
    the vision base policy's training data and vision rollouts all render through it.
    """

    def __init__(self, env, camera: str = "corner", width: int = 224, height: int = 224):
        import mujoco

        if camera not in CAMERAS:
            raise CameraError(f"unknown Meta-World camera {camera!r}; known: {', '.join(CAMERAS)}")
        self.env, self.camera, self.width, self.height = env, camera, width, height
        model = env.model
        # Shadows, reflections and multisampling cost most of the render time (~100 fps without).
        model.vis.quality.offsamples = 0
        model.vis.quality.shadowsize = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        try:
            self._renderer = mujoco.Renderer(model, height, width)
        except Exception as exc:  # noqa: BLE001 - GL errors come in several types
            raise CameraError(
                f"MuJoCo offscreen rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')} ({exc}); "
                "use MUJOCO_GL=egl (GPU/EGL) or MUJOCO_GL=osmesa (apt-get install libosmesa6)"
            ) from None
        self._cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if self._cam_id < 0:
            raise CameraError(f"{getattr(env, 'scfl_task', 'this env')} has no camera {camera!r}")
        self.intrinsics = CameraIntrinsics.from_fov(width, height, float(model.cam_fovy[self._cam_id]))

    def render(self, depth: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(colour (H, W, 3) uint8, depth (H, W) float32 metres or None) of the env's current state."""
        r = self._renderer
        r.disable_depth_rendering()
        r.update_scene(self.env.data, camera=self._cam_id)
        color = r.render()
        d = None
        if depth:
            r.enable_depth_rendering()
            r.update_scene(self.env.data, camera=self._cam_id)
            d = r.render().astype(np.float32)
            r.disable_depth_rendering()
        if self.camera in _UPSIDE_DOWN:
            color = color[::-1, ::-1]
            d = d[::-1, ::-1] if d is not None else None
        return np.ascontiguousarray(color), (np.ascontiguousarray(d) if d is not None else None)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class MetaWorldCameraSource(CameraSource):
    """Renders a Meta-World episode driven by ``policy`` (default: the scripted expert)."""

    name = "metaworld"

    def __init__(
        self,
        task: str = "drawer-close-v3",
        seed: int = 0,
        episode: int = 0,
        camera: str = "corner",
        width: int = 224,
        height: int = 224,
        depth: bool = True,
        policy: Callable[[np.ndarray], Any] | None = None,
        max_steps: int = 500,
    ):
        if camera not in CAMERAS:
            raise CameraError(f"unknown Meta-World camera {camera!r}; known: {', '.join(CAMERAS)}")
        self.task, self.seed, self.episode = task, seed, episode
        self.camera, self.width, self.height = camera, width, height
        self.depth = depth
        self.policy = policy
        self.max_steps = max_steps
        self.env = None
        self._renderer = None
        self.last_state: np.ndarray | None = None

    def open(self) -> None:
        if self.env is not None:
            return
        from scfl_nodes.core.sim import ScriptedExpert, make_env, reset_episode


        self.env = make_env(self.task, self.seed)
        self._renderer = EnvRenderer(self.env, self.camera, self.width, self.height)
        self.intrinsics = self._renderer.intrinsics
        self.last_state = reset_episode(self.env, self.seed, self.episode)
        if self.policy is None:
            expert = ScriptedExpert(self.task)
            self.policy = expert.act

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self.env is not None:
            self.env.close()
            self.env = None

    def render(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self._renderer.render(self.depth)

    def frames(self, max_frames: int | None = None) -> Iterator[Frame]:
        self.open()
        dt = float(self.env.dt)
        limit = self.max_steps if max_frames is None else min(max_frames, self.max_steps)
        try:
            for step in range(limit):
                color, depth = self.render()
                action = np.asarray(self.policy(self.last_state), dtype=np.float32).reshape(-1)
                yield Frame(step * dt, step, color, self.intrinsics, depth, self.intrinsics if depth is not None else None,
                            command=action)
                obs, _, _, truncated, _ = self.env.step(action)
                self.last_state = np.asarray(obs)
                if truncated:
                    return
        finally:
            self.close()
