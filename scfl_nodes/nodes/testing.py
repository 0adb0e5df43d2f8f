"""A real multi-process ROS graph for tests and benchmarks.

:class:`RosHarness` starts scfl nodes as subprocesses (the same way ``scfl up`` does) on a
private ROS domain, and gives the calling process its own rclpy context and node to publish,
subscribe, call services and wait for conditions. Node logs go to files that are attached to
assertion messages, so a failing graph test says which node complained and why.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from scfl_nodes.core.paths import package_path
from scfl_nodes.nodes.common import apply_dds_environment, ensure_interfaces
from scfl_nodes.nodes.graph import NodeProcess

_COUNTER = itertools.count()


def unique_domain_id() -> int:
    """A ROS domain id (1..100) that differs between concurrent runs and between harnesses."""
    return 1 + (os.getpid() * 7 + next(_COUNTER) * 13) % 100


def poll_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


class RosHarness:
    def __init__(self, workdir: str | os.PathLike, domain_id: int | None = None, transports: str = "DEFAULT"):
        """``transports``: Fast DDS transports for this process and the nodes it starts, a builtin
        name or an XML profile path (``common.apply_dds_environment``). Tests with small images use Fast
        DDS' DEFAULT (UDP + shared memory); 640x480 frames use ``common.camera_transports()``."""
        ensure_interfaces()
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.domain_id = unique_domain_id() if domain_id is None else domain_id
        self.transports = transports
        # DEFAULT = Fast DDS' own default: leave the variables unset in this process (with one set,
        # a process that also loaded pyrealsense2 crashes at exit; see common.preload_realsense)
        apply_dds_environment(os.environ, transports)
        self.context = Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.node = rclpy.create_node(f"scfl_test_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self.processes: dict[str, NodeProcess] = {}

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self.executor.spin_once(timeout_sec=0.02)
            except Exception:
                if self._stop.is_set():
                    return
                time.sleep(0.01)
            time.sleep(0.0005)

    # ------------------------------------------------------------------ nodes
    def start(self, name: str, params: dict[str, Any] | None = None, *, params_file: bool = True,
              namespace: str = "") -> NodeProcess:
        files = [package_path("config/nodes.yaml")] if params_file else []
        key = f"{namespace.strip('/')}/{name}" if namespace else name  # two robots: same node, two namespaces
        proc = NodeProcess(name, files, dict(params or {}), namespace=namespace, domain_id=self.domain_id,
                           log_path=self.workdir / f"{key.replace('/', '.')}.log",
                           env={k: v for k, v in os.environ.items()})
        proc.start(self.workdir)
        self.processes[key] = proc
        return proc

    def logs(self) -> str:
        return "\n".join(f"----- {n} (exit {p.proc.poll() if p.proc else None}) -----\n{p.log()[-3000:]}"
                         for n, p in self.processes.items())

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        value = poll_until(predicate, timeout)
        if value:
            return value
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")

    # ------------------------------------------------------------------ pub/sub/services
    def subscribe(self, msg_type, topic: str, qos: Any = 10, on_message: Callable[[Any], None] | None = None) -> list:
        """Messages on ``topic`` collect in the returned list; ``on_message`` (optional) is called
        first, on the spin thread (e.g. to take an arrival time)."""
        received: list = []

        def callback(msg) -> None:
            if on_message is not None:
                on_message(msg)
            received.append(msg)

        with self._lock:
            self.node.create_subscription(msg_type, topic, callback, qos)
        return received

    def publisher(self, msg_type, topic: str, qos: Any = 10):
        with self._lock:
            return self.node.create_publisher(msg_type, topic, qos)

    def call(self, srv_type, name: str, request, timeout: float = 60.0):
        with self._lock:
            client = self.node.create_client(srv_type, name)
        self.wait_for(client.service_is_ready, timeout, f"service {name}")
        future = client.call_async(request)
        self.wait_for(future.done, timeout, f"response of {name}")
        return future.result()

    def set_parameters(self, node: str, timeout: float = 60.0, **values) -> list:
        """Set parameters of ``node`` (e.g. ``/command_node``) through its rcl_interfaces
        SetParameters service, as ``ros2 param set`` does; returns the SetParametersResult list."""
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        params = []
        for name, v in values.items():
            if isinstance(v, bool):
                pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
            elif isinstance(v, int):
                pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
            elif isinstance(v, float):
                pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
            elif isinstance(v, str):
                pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)
            elif isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
                pv = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=list(v))
            elif isinstance(v, (list, tuple)):
                pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[float(x) for x in v])
            else:
                raise TypeError(f"unsupported parameter value {v!r}")
            params.append(Parameter(name=name, value=pv))
        request = SetParameters.Request(parameters=params)
        return list(self.call(SetParameters, f"{node.rstrip('/')}/set_parameters", request, timeout).results)

    def send_goal(self, action_type, name: str, goal, feedback: Callable | None = None, timeout: float = 60.0):
        """Send an action goal; returns the ClientGoalHandle (``.accepted``) once the server answered."""
        from rclpy.action import ActionClient

        with self._lock:
            client = ActionClient(self.node, action_type, name)
        self.wait_for(client.server_is_ready, timeout, f"action server {name}")
        with self._lock:
            future = client.send_goal_async(goal, feedback_callback=feedback)
        self.wait_for(future.done, timeout, f"goal response of {name}")
        return future.result()

    def goal_result(self, goal_handle, timeout: float = 120.0):
        """Wait for an accepted goal's outcome; returns the response (``.status``, ``.result``)."""
        with self._lock:
            future = goal_handle.get_result_async()
        self.wait_for(future.done, timeout, "the action result")
        return future.result()

    def cancel_goal(self, goal_handle, timeout: float = 60.0):
        with self._lock:
            future = goal_handle.cancel_goal_async()
        self.wait_for(future.done, timeout, "the cancel response")
        return future.result()

    def diagnostics(self) -> list:
        """Every DiagnosticStatus received so far on /diagnostics."""
        if not hasattr(self, "_diag"):
            from diagnostic_msgs.msg import DiagnosticArray

            self._diag = self.subscribe(DiagnosticArray, "/diagnostics", 50)
        return [s for arr in list(self._diag) for s in arr.status]

    def close(self) -> dict[str, int | None]:
        codes = {name: p.stop() for name, p in self.processes.items()}
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            self.context.try_shutdown()
        return codes

    def __enter__(self) -> "RosHarness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_EXIT_STATUS: list[int] = []


def install_exit_guard(config) -> None:
    """Keep a pytest run's exit code when pyrealsense2 and rclpy share the process.

    pyrealsense2 bundles a second Fast DDS; when it was imported before rclpy created
    participants (e.g. a camera test ran first), the two crash in their static destructors
    after every test has finished (exit code 139 with all tests passed). This records pytest's
    final status and, if both libraries are loaded, leaves with it via ``os._exit`` before the
    native destructors run. Call once per session (idempotent).
    """
    import atexit
    import sys

    if getattr(config, "_scfl_exit_guard", False):
        return
    config._scfl_exit_guard = True

    class _Recorder:
        def pytest_sessionfinish(self, session, exitstatus):
            _EXIT_STATUS.append(int(exitstatus))

    config.pluginmanager.register(_Recorder(), "scfl-native-exit-guard")

    def _leave():
        if _EXIT_STATUS and "pyrealsense2" in sys.modules and "rclpy" in sys.modules:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(_EXIT_STATUS[-1])

    atexit.register(_leave)
