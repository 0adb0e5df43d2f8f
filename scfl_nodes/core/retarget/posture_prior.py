"""GMR posture prior: Gaussian Mixture Regression (the ``gmr`` package) from task context to q.

"GMR" here is Gaussian Mixture Regression, not "General Motion Retargeting". A GMM is fitted on
joint samples [context, posture]; conditioning it on a context gives q_GMR, the posture the
training data would use there. The IK uses q_GMR as the start and as the λ||q − q_GMR||² term,
so a redundant arm picks "natural" postures (elbow up, wrist mid-range) instead of whatever
the descent happened to land on.

The default context is the end-effector target position in the robot base frame (3 numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gmr import GMM

from .robot import RobotModel

FORMAT_VERSION = 1
_BLAS = None


def _single_thread_blas():
    """GMR works on tiny matrices: multi-threaded BLAS only adds thread hand-offs, which on a busy
    machine made ``predict`` 10x slower (48 ms vs 4.5 ms for 40 contexts). Limit it to 1 thread."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


class PosturePriorError(ValueError):
    """Bad training data or a prior file that does not match the robot/context."""


class PosturePrior:
    """A fitted GMR mapping context (d,) -> joint posture (n,), with input standardisation."""

    def __init__(self, gmm: GMM, context_dim: int, x_mean, x_std, y_mean, y_std, joint_names=None,
                 lower=None, upper=None):
        self.gmm = gmm
        self.context_dim = int(context_dim)
        self.x_mean, self.x_std = np.asarray(x_mean, float), np.asarray(x_std, float)
        self.y_mean, self.y_std = np.asarray(y_mean, float), np.asarray(y_std, float)
        self.joint_names = list(joint_names) if joint_names is not None else None
        self.lower = None if lower is None else np.asarray(lower, float)
        self.upper = None if upper is None else np.asarray(upper, float)
        self._inputs = np.arange(self.context_dim)

    @property
    def n_joints(self) -> int:
        return self.y_mean.size

    @classmethod
    def fit(cls, contexts, postures, *, n_components: int = 5, seed: int = 0, robot: RobotModel | None = None) -> "PosturePrior":
        """Fit on (context -> posture) pairs: ``contexts`` (N, d), ``postures`` (N, n)."""
        x = np.asarray(contexts, dtype=float)
        y = np.asarray(postures, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise PosturePriorError(f"contexts (N, d) and postures (N, n) must have the same N; got {x.shape} and {y.shape}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise PosturePriorError("contexts and postures must be finite")
        if n_components < 1 or x.shape[0] < 5 * n_components:
            raise PosturePriorError(f"need at least {5 * n_components} samples for {n_components} components, got {x.shape[0]}")
        if robot is not None and y.shape[1] != robot.nq:
            raise PosturePriorError(f"postures have {y.shape[1]} joints, robot {robot.name} has {robot.nq}")
        x_mean, x_std = x.mean(0), x.std(0) + 1e-9
        y_mean, y_std = y.mean(0), y.std(0) + 1e-9
        samples = np.hstack([(x - x_mean) / x_std, (y - y_mean) / y_std])
        gmm = GMM(n_components=n_components, random_state=np.random.RandomState(seed))
        with _single_thread_blas():
            gmm.from_samples(samples, init_params="kmeans++", n_iter=100)
        return cls(gmm, x.shape[1], x_mean, x_std, y_mean, y_std,
                   robot.joint_names if robot is not None else None,
                   robot.lower if robot is not None else None, robot.upper if robot is not None else None)

    def predict(self, context) -> np.ndarray:
        """q_GMR for one context (d,) -> (n,), or a batch (N, d) -> (N, n); clamped to joint limits."""
        x = np.asarray(context, dtype=float)
        single = x.ndim == 1
        x = x.reshape(1, -1) if single else x
        if x.shape[1] != self.context_dim or not np.isfinite(x).all():
            raise PosturePriorError(f"context must be finite with {self.context_dim} values per row, got shape {np.shape(context)}")
        with _single_thread_blas():
            y = self.gmm.predict(self._inputs, (x - self.x_mean) / self.x_std) * self.y_std + self.y_mean
        if self.lower is not None:
            y = np.minimum(np.maximum(y, self.lower), self.upper)
        return y[0] if single else y

    def save(self, path) -> Path:
        """Write an ``.npz`` (arrays only, no pickle) that :meth:`load` reads back exactly."""
        path = Path(path)
        meta = {"format_version": FORMAT_VERSION, "context_dim": self.context_dim, "joint_names": self.joint_names}
        arrays = dict(priors=self.gmm.priors, means=self.gmm.means, covariances=self.gmm.covariances,
                      x_mean=self.x_mean, x_std=self.x_std, y_mean=self.y_mean, y_std=self.y_std,
                      meta=np.array(json.dumps(meta)))
        if self.lower is not None:
            arrays.update(lower=self.lower, upper=self.upper)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path, robot: RobotModel | None = None) -> "PosturePrior":
        path = Path(path)
        if not path.is_file():
            raise PosturePriorError(f"posture prior file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays["meta"]))
        except (OSError, ValueError, KeyError) as exc:
            raise PosturePriorError(f"{path} is not a posture prior file ({exc})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise PosturePriorError(f"{path}: unsupported posture prior format {meta.get('format_version')}")
        means = arrays["means"]
        gmm = GMM(n_components=means.shape[0], priors=arrays["priors"], means=means, covariances=arrays["covariances"])
        prior = cls(gmm, meta["context_dim"], arrays["x_mean"], arrays["x_std"], arrays["y_mean"], arrays["y_std"],
                    meta.get("joint_names"), arrays.get("lower"), arrays.get("upper"))
        if robot is not None:
            if prior.n_joints != robot.nq:
                raise PosturePriorError(f"{path}: prior has {prior.n_joints} joints, robot {robot.name} has {robot.nq}")
            if prior.joint_names is not None and prior.joint_names != robot.joint_names:
                raise PosturePriorError(f"{path}: prior was fitted for joints {prior.joint_names}, robot has {robot.joint_names}")
        return prior


def sample_natural_postures(robot: RobotModel, n: int, *, spread: float = 0.35, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(context, posture) pairs around the robot's home posture: contexts are the end-effector
    positions. A stand-in for recorded demonstrations when none are given (documented)."""
    rng = np.random.default_rng(seed)
    q = robot.clamp(robot.home + rng.normal(0.0, spread, size=(n, robot.nq)))
    ctx = np.array([robot.fk(qi).translation for qi in q])
    return ctx, q


_DEFAULT_PRIORS: dict[tuple, PosturePrior] = {}


def default_prior(robot: RobotModel, *, n_samples: int = 600, n_components: int = 5, seed: int = 0) -> PosturePrior:
    """A prior fitted on :func:`sample_natural_postures` (~0.5 s; deterministic, so cached per
    robot and settings for the process: predict() never changes it)."""
    key = (robot.name, robot.ee_frame, tuple(robot.joint_names), tuple(robot.home), n_samples, n_components, seed)
    prior = _DEFAULT_PRIORS.get(key)
    if prior is None:
        ctx, q = sample_natural_postures(robot, n_samples, seed=seed)
        prior = _DEFAULT_PRIORS[key] = PosturePrior.fit(ctx, q, n_components=n_components, seed=seed, robot=robot)
    return prior


def fit_prior_from_robot_demos(paths, robot: RobotModel, *, n_components: int = 5, seed: int = 0) -> PosturePrior:
    """Fit a prior on robot demonstrations written by ``scfl retarget`` (or any episode ``.npz``
    with ``joint_positions`` (T, n)): contexts are the end-effector positions FK(q), so the prior
    learns which postures these demos used where."""
    postures = []
    for path in paths:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k in ("joint_positions", "reachable")}
        except (OSError, ValueError) as exc:
            raise PosturePriorError(f"{path}: not a readable .npz ({exc})") from None
        if "joint_positions" not in arrays:
            raise PosturePriorError(f"{path}: no 'joint_positions' array (not a robot demo from scfl retarget)")
        q = np.asarray(arrays["joint_positions"], dtype=float)
        reachable = arrays.get("reachable")
        if q.ndim != 2 or q.shape[1] != robot.nq:
            raise PosturePriorError(f"{path}: joint_positions has shape {q.shape}, robot {robot.name} has {robot.nq} joints")
        if reachable is not None:
            q = q[np.asarray(reachable, dtype=bool)]  # flagged waypoints are not postures to imitate
        postures.append(q)
    if not postures:
        raise PosturePriorError("no robot demos given")
    q = np.vstack(postures)
    ctx = np.array([robot.fk(qi).translation for qi in q])
    return PosturePrior.fit(ctx, q, n_components=n_components, seed=seed, robot=robot)
