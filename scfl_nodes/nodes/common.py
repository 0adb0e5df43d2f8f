"""Shared plumbing of the scfl ROS 2 nodes: interface loading, parameters, diagnostics, main().

Every node is a thin class over ``scfl_nodes.core``; this module keeps the ROS boilerplate in
one place so that all nodes behave the same way for users:

* parameters are declared with a :class:`Param` spec (description + range) and validated at
  start-up; a bad value makes the node exit with ONE line ``<node>: error: ...`` and code 2;
* ``config/nodes.yaml`` is loaded by default when no ``--params-file`` is given;
* ``/diagnostics`` gets a ``DiagnosticArray`` with the node's status once per second;
* Ctrl-C / SIGTERM shut the node down cleanly (exit 0).
"""

from __future__ import annotations

import ctypes
import dataclasses
import faulthandler
import glob
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]


def camera_transports() -> str:
    """The Fast DDS profile for camera-sized messages on one host (config/fastdds_shm.xml).

    Default transports with a 32 MB shared-memory segment: one 640x480 rgb8 frame (900 KB) does
    not fit Fast DDS' default 512 KB segment, so best-effort frames fall back to fragmented UDP
    and most are lost. Unlike the builtin LARGE_DATA mode it still talks to participants on
    default transports. Nodes never pick it themselves; the environment decides (scripts/env.sh
    exports it; docs/ros.md)."""
    from scfl_nodes.core.paths import package_path

    return str(package_path("config/fastdds_shm.xml"))


def apply_dds_environment(env, transports: str) -> None:
    """Select Fast DDS transports in ``env`` (``os.environ`` or a child's environment dict).

    ``transports`` is a builtin name (``DEFAULT``, ``LARGE_DATA``, ...) or the path of a Fast DDS
    XML profile (``*.xml``), which then replaces the builtin transports. DEFAULT unsets both
    variables: Fast DDS' own default."""
    builtin, profile = (None, str(transports)) if str(transports).endswith(".xml") else (transports, None)
    if builtin == "DEFAULT":
        builtin = None
    for key, value in (("FASTDDS_BUILTIN_TRANSPORTS", builtin), ("FASTDDS_DEFAULT_PROFILES_FILE", profile)):
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value


def set_realtime_priority(priority: int) -> tuple[bool, str]:
    """Put every thread of this process (the DDS listeners included) under ``SCHED_FIFO``.

    Why: on a busy CPU a control-path node's callback waits behind other processes' time
    slices (the tail of its latency, not the median); robot stacks run their control threads
    real-time for that reason (ros2_control's controller_manager: SCHED_FIFO 50). Threads
    started later inherit the policy from the thread that starts them. Never raises: without
    the right (``CAP_SYS_NICE`` or an ``rtprio`` limit in /etc/security/limits.conf) the node
    keeps normal scheduling and the returned text says how to grant it.
    Returns (applied, description).
    """
    if priority <= 0:
        return False, "normal scheduling (thread_priority 0)"
    if not hasattr(os, "sched_setscheduler"):
        return False, "normal scheduling: this OS has no SCHED_FIFO"
    param = os.sched_param(int(priority))
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for n, tid in enumerate(tids):
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, param)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
        except OSError as exc:  # EPERM: no right to real-time scheduling
            for done in tids[:n]:  # all threads alike: undo a partial change
                try:
                    os.sched_setscheduler(done, os.SCHED_OTHER, os.sched_param(0))
                except OSError:
                    pass
            return False, (f"normal scheduling: SCHED_FIFO {priority} refused ({exc.strerror or exc}); allow it "
                           f"with an rtprio limit (/etc/security/limits.conf: '@realtime - rtprio 98') or CAP_SYS_NICE")
    return True, f"SCHED_FIFO priority {priority}"


class NodeConfigError(Exception):
    """A parameter is missing or out of range: the node refuses to start (one-line message)."""


class InterfacesNotBuiltError(ImportError):
    """``scfl_interfaces`` was not generated (run scripts/build_ros.sh)."""


def interfaces_install_dir() -> Path:
    """The colcon install space that holds ``scfl_interfaces`` (``$SCFL_ROS_WS`` overrides)."""
    return Path(os.environ.get("SCFL_ROS_WS", REPO_ROOT / "ros_ws" / "install"))


def preload_realsense() -> None:
    """Import pyrealsense2 (if installed) before any ROS library is loaded.

    pyrealsense2 bundles its own Fast DDS / Fast CDR. Loaded after rclpy's, it cannot open
    devices or recordings ("unknown error") and recording can segfault; loaded first, it works,
    but with ``FASTDDS_BUILTIN_TRANSPORTS`` set the two Fast DDS copies crash in their static
    destructors at interpreter exit -- callers end such processes with :func:`hard_exit`.
    Only camera_node (RealSense sources) needs this.
    """
    try:
        import pyrealsense2  # noqa: F401
    except ImportError:
        pass


def hard_exit(code: int) -> None:
    """Flush and leave without running native static destructors (see preload_realsense)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def ensure_interfaces() -> None:
    """Make ``scfl_interfaces`` importable and usable in this process.

    On a full ROS install the package is already on the paths. In the pip-only setup it lives in
    ``ros_ws/install``: its Python package is added to ``sys.path`` and its typesupport libraries
    are pre-loaded (RTLD_GLOBAL), because the rmw loads them with ``dlopen(<name>)``, which only
    searches ``LD_LIBRARY_PATH`` as it was when the process started.
    """
    try:
        import scfl_interfaces  # noqa: F401
    except ImportError:
        pyver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        site = interfaces_install_dir() / "lib" / pyver / "site-packages"
        if not (site / "scfl_interfaces").is_dir():
            raise InterfacesNotBuiltError(
                f"ROS interfaces scfl_interfaces are not built (looked in {site}); run scripts/build_ros.sh"
            ) from None
        sys.path.insert(0, str(site))
        import scfl_interfaces  # noqa: F401
    lib_dir = Path(scfl_interfaces.__file__).resolve().parents[3]
    for lib in sorted(glob.glob(str(lib_dir / "libscfl_interfaces__*.so"))):
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)


def ros_subprocess_env(base: dict | None = None, domain_id: int | None = None) -> dict:
    """Environment for child processes running nodes from this checkout (pip-only setup)."""
    env = dict(os.environ if base is None else base)
    install = interfaces_install_dir()
    pyver = f"python{sys.version_info[0]}.{sys.version_info[1]}"

    def prepend(var: str, value: str) -> None:
        parts = [p for p in env.get(var, "").split(os.pathsep) if p]
        if value not in parts:
            env[var] = os.pathsep.join([value, *parts])

    prepend("AMENT_PREFIX_PATH", sys.prefix)
    prepend("AMENT_PREFIX_PATH", str(install))
    prepend("PYTHONPATH", str(install / "lib" / pyver / "site-packages"))
    prepend("PYTHONPATH", str(REPO_ROOT))
    prepend("LD_LIBRARY_PATH", str(install / "lib"))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def default_params_file() -> Path | None:
    """``config/nodes.yaml`` of the checkout or of the installed share directory."""
    from scfl_nodes.core.paths import package_path

    candidate = package_path("config/nodes.yaml")
    return candidate if candidate.is_file() else None


# --------------------------------------------------------------------------- parameters


#: the default reason a parameter is read-only (Param.why_read_only)
READ_ONLY_REASON = ("used once at start-up to set up topics, models, devices or files; "
                    "change it in the params file and restart the node")


@dataclasses.dataclass(frozen=True)
class Param:
    """A declared node parameter: default, one-line description and the accepted range."""

    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: Sequence[str] | None = None
    #: False: safe to change at run time (``ros2 param set``), validated by the callback that
    #: :func:`enable_dynamic_params` installs. True (default): read once at start-up.
    read_only: bool = True
    #: why a read-only parameter cannot change at run time (shown by ``ros2 param describe``)
    why_read_only: str = READ_ONLY_REASON

    def descriptor(self):
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

        desc = self.description
        if self.choices:
            desc += f" (one of: {', '.join(self.choices)})"
        desc += f" [read-only: {self.why_read_only}]" if self.read_only else " [dynamic: can be set at run time]"
        d = ParameterDescriptor(name=self.name, description=desc, read_only=self.read_only)
        if self.min is not None and self.max is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(self.min), to_value=int(self.max), step=0)]
            elif isinstance(self.default, float):
                d.floating_point_range = [FloatingPointRange(from_value=float(self.min), to_value=float(self.max), step=0.0)]
        return d

    def check(self, value: Any) -> Any:
        if isinstance(self.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(self.default) and not (
            isinstance(self.default, list) and isinstance(value, (list, tuple))
        ):
            raise NodeConfigError(
                f"parameter '{self.name}' must be {type(self.default).__name__}, got {value!r}"
            )
        if self.min is not None and value < self.min:
            raise NodeConfigError(f"parameter '{self.name}' must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise NodeConfigError(f"parameter '{self.name}' must be <= {self.max}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise NodeConfigError(
                f"parameter '{self.name}' must be one of {', '.join(self.choices)}; got {value!r}"
            )
        return value


def normal_scheduling() -> None:
    """Back to normal scheduling for the calling thread: background work (loading a skill) started
    by a real-time thread must not compete with the control cycle at its priority."""
    if hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass


def thread_priority_param(default: int = 0) -> Param:
    """The ``thread_priority`` parameter of the nodes on the control path (skill_node, command_node)."""
    return Param("thread_priority", default, "SCHED_FIFO priority (1-98) of this node's threads, so that other "
                 "processes on a busy CPU cannot delay a control cycle; 0 = normal scheduling. Needs CAP_SYS_NICE or "
                 "an rtprio limit, else a warning and normal scheduling", min=0, max=98,
                 why_read_only="applied to the process's threads at start-up")


def apply_thread_priority(node, diag: "Diagnostics", priority: int) -> None:
    """:func:`set_realtime_priority` for a node: the outcome on ``/diagnostics`` (``scheduling``),
    a warning when real-time scheduling was asked for and refused."""
    applied, scheduling = set_realtime_priority(priority)
    if priority and not applied:
        node.get_logger().warning(scheduling)
    diag.update(scheduling=scheduling)


def declare_params(node, specs: Sequence[Param]) -> dict[str, Any]:
    """Declare ``specs`` on ``node`` (descriptors with ranges) and return validated values."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    values = {}
    for spec in specs:
        default = spec.default
        try:
            if isinstance(default, list) and not default:
                from rclpy.parameter import Parameter

                node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, spec.descriptor())
                value = node.get_parameter(spec.name).value
                value = [] if value is None else list(value)
            else:
                value = node.declare_parameter(spec.name, default, spec.descriptor()).value
        except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
            raise NodeConfigError(f"parameter '{spec.name}': {exc}") from None
        except Exception as exc:  # rclpy raises several types for bad overrides
            if "Parameter" in type(exc).__name__ or "parameter" in str(exc):
                raise NodeConfigError(f"parameter '{spec.name}': {exc}") from None
            raise
        values[spec.name] = spec.check(list(value) if isinstance(value, (list, tuple)) else value)
    return values


def enable_dynamic_params(
    node,
    specs: Sequence[Param],
    values: dict[str, Any],
    apply: Callable[[dict[str, Any]], None] | None = None,
    validators: dict[str, Callable[[Any], Any]] | None = None,
) -> None:
    """Let the ``read_only=False`` parameters of ``specs`` change while the node runs.

    A parameter callback (``add_on_set_parameters_callback``) validates every requested value
    with the spec's type/range/choices check and the optional ``validators[name](value)``
    (raise ``NodeConfigError``/``ValueError`` with the reason, or return a normalised value);
    a bad value is refused with that reason and nothing changes. Read-only parameters are
    refused by rclpy itself (their descriptor says why). After a successful set, ``values``
    (the node's parameter dict) is updated and ``apply(changed)`` is called with the new values.
    Call after :func:`declare_params` (rclpy also runs these callbacks while declaring).
    """
    from rcl_interfaces.msg import SetParametersResult

    by_name = {s.name: s for s in specs}
    validators = dict(validators or {})
    pending: dict[str, Any] = {}

    def on_set(params) -> SetParametersResult:
        checked = {}
        for param in params:
            spec = by_name.get(param.name)
            if spec is None:
                continue  # rclpy's own parameters (use_sim_time, ...)
            if spec.read_only:
                return SetParametersResult(successful=False,
                                           reason=f"parameter '{spec.name}' is read-only: {spec.why_read_only}")
            value = param.value
            try:
                value = spec.check(list(value) if isinstance(value, (list, tuple)) else value)
                if spec.name in validators:
                    normalised = validators[spec.name](value)
                    value = value if normalised is None else normalised
            except (NodeConfigError, ValueError, TypeError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            checked[spec.name] = value
        pending.clear()
        pending.update(checked)
        return SetParametersResult(successful=True)

    def after_set(params) -> None:
        changed = {p.name: pending[p.name] for p in params if p.name in pending}
        pending.clear()
        if not changed:
            return
        values.update(changed)
        node.get_logger().info("parameters changed at run time: "
                               + ", ".join(f"{k}={v!r}" for k, v in changed.items()))
        if apply is not None:
            apply(changed)

    node.add_on_set_parameters_callback(on_set)
    node.add_post_set_parameters_callback(after_set)


# --------------------------------------------------------------------------- diagnostics


class Diagnostics:
    """Publishes the node's health on ``/diagnostics`` once per second (and on change)."""

    OK, WARN, ERROR, STALE = 0, 1, 2, 3
    _NAMES = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}

    def __init__(self, node, hardware_id: str = "", period_s: float = 1.0):
        from diagnostic_msgs.msg import DiagnosticArray

        self._node = node
        self._hardware_id = hardware_id
        self._lock = threading.Lock()
        self._level = self.OK
        self._message = "starting"
        self._values: dict[str, str] = {}
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period_s, self.publish)

    def set(self, level: int, message: str, **values: Any) -> None:
        """Set the status; logs once when the level or message changes."""
        with self._lock:
            changed = (level, message) != (self._level, self._message)
            self._level, self._message = level, message
            self._values.update({k: str(v) for k, v in values.items()})
        if changed:
            # one call site per severity: rclpy refuses a severity change at the same call site
            text = f"status {self._NAMES[level]}: {message}"
            if level == self.OK:
                self._node.get_logger().info(text)
            elif level == self.WARN:
                self._node.get_logger().warning(text)
            else:
                self._node.get_logger().error(text)
            self.publish()

    def update(self, **values: Any) -> None:
        with self._lock:
            self._values.update({k: str(v) for k, v in values.items()})

    @property
    def level(self) -> int:
        return self._level

    def publish(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        try:
            name = f"scfl: {self._node.get_fully_qualified_name()}"
        except Exception:  # the node is being destroyed (a worker thread reporting while stopping)
            return
        with self._lock:
            status = DiagnosticStatus(
                level=bytes([self._level]),
                name=name,
                message=self._message,
                hardware_id=self._hardware_id,
                values=[KeyValue(key=k, value=v) for k, v in sorted(self._values.items())],
            )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        try:
            self._pub.publish(msg)
        except Exception:  # context already shut down
            pass


# --------------------------------------------------------------------------- helpers


def stamp_to_sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float):
    from builtin_interfaces.msg import Time

    sec = int(t)
    return Time(sec=sec, nanosec=int(round((t - sec) * 1e9)) % 1_000_000_000)


def now_sec(node) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


def image_to_numpy(msg):
    """``sensor_msgs/Image`` (rgb8/bgr8/mono8/...) -> HxWxC uint8 numpy array (RGB order)."""
    import numpy as np

    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(msg.encoding)
    if channels is None:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}")
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray)) else msg.data, np.uint8)
    img = buf.reshape(msg.height, msg.step)[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    if msg.encoding.startswith("bgr"):
        img = img[..., [2, 1, 0] + ([3] if channels == 4 else [])]
    return img


def numpy_to_image(img, stamp, frame_id: str, encoding: str = "rgb8"):
    from sensor_msgs.msg import Image

    import numpy as np

    img = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * c)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.data = img.tobytes()
    return msg


# --------------------------------------------------------------------------- main()


#: seconds a stopping node may take to tear down (executor, node, DDS participant) and exit
TEARDOWN_TIMEOUT_S = 60.0


def run_node(node_factory: Callable[[], Any], name: str, args: list[str] | None = None, threads: int = 4) -> int:
    """Standard ``main()`` of an scfl node; returns the process exit code.

    Loads ``config/nodes.yaml`` unless ``--params-file`` is given, turns start-up
    ``NodeConfigError``/``InterfacesNotBuiltError`` into one line on stderr + exit 2, spins a
    MultiThreadedExecutor (so slow callbacks in their own callback group never block timers),
    and shuts down cleanly on Ctrl-C or SIGTERM. ``threads=1``: a SingleThreadedExecutor, for a
    node whose callbacks are all short and whose latency matters (command_node): a callback runs
    on the thread that saw it ready, without the hand-off to a worker thread.

    A stopping node always ends: if tearing down (including the DDS participant, destroyed while
    the interpreter exits) takes longer than ``TEARDOWN_TIMEOUT_S``, every thread's stack goes to
    stderr and the process exits with code 1 (bench_ros once saw bag_player stay alive for
    minutes after its playback had finished).
    """
    argv = list(sys.argv if args is None else args)
    if "--params-file" not in argv:
        params = default_params_file()
        if params is not None:  # first, so that later -p / --params-file arguments override it
            if "--ros-args" in argv:
                i = argv.index("--ros-args") + 1
                argv = argv[:i] + ["--params-file", str(params)] + argv[i:]
            else:
                argv = argv + ["--ros-args", "--params-file", str(params)]
    try:
        ensure_interfaces()
    except InterfacesNotBuiltError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    try:
        rclpy.init(args=argv, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    except Exception as exc:
        print(f"{name}: error: could not start ROS ({exc})", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    node = None
    code = 0
    try:
        node = node_factory()
        executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        spin = threading.Thread(target=_spin, args=(executor, stop), daemon=True)
        spin.start()
        finished = getattr(node, "finished", None)
        while not stop.is_set() and spin.is_alive() and not (finished is not None and finished.is_set()):
            stop.wait(0.05)
        stop.set()
        # a native watchdog thread: it also fires while a C call holds the GIL or the interpreter
        # is finalizing (where rclpy's context, and with it the DDS participant, is destroyed)
        faulthandler.dump_traceback_later(TEARDOWN_TIMEOUT_S, exit=True)
        if getattr(node, "fatal_error", None):
            print(f"{name}: error: {node.fatal_error}", file=sys.stderr)
            code = 1
        spin.join(timeout=5.0)  # the executor must be idle before nodes are destroyed
        if hasattr(node, "shutdown"):
            node.shutdown()
        executor.shutdown(timeout_sec=2.0)  # joins the callback threads
        _collect_callback_errors(node, executor)
    except NodeConfigError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            try:
                node.destroy_node()
            except Exception:
                pass
        rclpy.try_shutdown()
    return code


def _collect_callback_errors(node, executor) -> None:
    """Fetch the results of callbacks that finished after the last spin.

    A MultiThreadedExecutor re-raises a callback's exception on its *next* spin; a callback that
    failed while the node was stopping has none, and rclpy would print "The following exception
    was never retrieved" when its task is garbage-collected. Real errors are logged here instead;
    a callback that hit an entity being destroyed during shutdown is expected and dropped.
    """
    for task in list(getattr(executor, "_futures", ())):
        if not task.done():
            continue
        exc = task.exception()
        if exc is not None and "destruction was requested" not in str(exc):
            try:
                node.get_logger().error(f"callback failed while stopping: {type(exc).__name__}: {exc}")
            except Exception:
                pass


def _spin(executor, stop: threading.Event) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    except (ExternalShutdownException, KeyboardInterrupt):
        pass
    finally:
        stop.set()


def sensor_qos(depth: int = 5):
    """SensorDataQoS (best effort, volatile, keep last): what the project's camera *subscribers*
    use, because a best-effort subscription matches reliable and best-effort publishers alike
    (a reliable subscription would get nothing from a SensorDataQoS camera)."""
    from rclpy.qos import qos_profile_sensor_data

    return qos_profile_sensor_data


def camera_qos(kind: str = "reliable"):
    """Publisher QoS of camera streams: ``reliable`` as realsense-ros publishes images and
    camera_info (reliable, volatile, keep last 10: a default-QoS subscriber such as rviz or
    ``ros2 topic echo`` receives every frame), or ``sensor_data`` (best effort, depth 5)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if kind == "sensor_data":
        return qos_profile_sensor_data
    if kind != "reliable":
        raise ValueError(f"camera QoS must be reliable or sensor_data, got {kind!r}")
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def latched_qos():
    """Transient-local, reliable, depth 1: late joiners (rviz) get the last value."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=1,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def monotonic() -> float:
    return time.monotonic()
