"""Test inputs for the node tests: a small checkpoint and a real camera image."""

from __future__ import annotations

import pathlib

import numpy as np


def small_config():
    """A small Metric-Solver architecture (fast on a CPU): 4 blocks of 48 channels."""
    from metric_solver_ros.model import MetricSolverConfig

    return MetricSolverConfig(preset='custom', embed_dim=48, depth=4, num_heads=2,
                              taps=(0, 1, 2, 3), head_features=16,
                              head_out_channels=(16, 16, 32, 32), anchor_dim=8,
                              input_size=(56, 70))


def small_checkpoint(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write a small random-weight checkpoint of :func:`small_config` and return its path."""
    import torch

    from metric_solver_ros.checkpoint import save_checkpoint
    from metric_solver_ros.model import create_model

    torch.manual_seed(seed)
    save_checkpoint(path, create_model(small_config()))
    return path


def camera_image(width: int = 160, height: int = 120) -> np.ndarray:
    """A camera image of ``width`` x ``height`` (``demo.camera_sample``).

    The real NYU sample, or a synthetic indoor scene in a clone without ../shared.
    """
    from metric_solver_ros.demo import camera_sample

    return camera_sample(width, height, seed=7)[0]


class DiagnosticsRecorder:
    """The /diagnostics statuses of one node, recorded by a running client node.

    Args:
        client: A ``DepthNodeClient`` (its node spins in a thread).
        name: The status name (``<fully qualified node name>: depth``).
    """

    def __init__(self, client, name: str) -> None:
        import threading

        from diagnostic_msgs.msg import DiagnosticArray

        self.name = name
        self._lock = threading.Lock()
        self._statuses: list = []
        self._node = client.node
        self._subscription = client.node.create_subscription(
            DiagnosticArray, '/diagnostics', self._record, 10)

    def _record(self, msg) -> None:
        with self._lock:
            self._statuses += [s for s in msg.status if s.name == self.name]

    def statuses(self) -> list:
        """A copy of the statuses received so far."""
        with self._lock:
            return list(self._statuses)

    def clear(self) -> None:
        """Forget what was received."""
        with self._lock:
            self._statuses.clear()

    def wait(self, predicate, timeout_s: float):
        """The first status received for which ``predicate(status)`` holds, or None."""
        from metric_solver_ros.node_client import wait_for

        def found():
            return next((s for s in self.statuses() if predicate(s)), None)

        wait_for(lambda: found() is not None, timeout_s)
        return found()


def status_values(status) -> dict[str, str]:
    """The key/values of a DiagnosticStatus as a dict (in their order)."""
    return {kv.key: kv.value for kv in status.values}


class LifecycleClient:
    """``~/change_state`` and ``~/get_state`` of a lifecycle node, on a client's node.

    Args:
        client: A ``DepthNodeClient`` (its node spins in a thread).
        node_name: Fully qualified name of the lifecycle node.
    """

    def __init__(self, client, node_name: str) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self._client = client
        self.change = client.node.create_client(ChangeState, f'{node_name}/change_state')
        self.get = client.node.create_client(GetState, f'{node_name}/get_state')

    def state(self) -> str:
        """The node's state label (``unconfigured``, ``inactive``, ``active``, ...)."""
        from lifecycle_msgs.srv import GetState

        return self._client.call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int, timeout_s: float = 60.0) -> bool:
        """Ask for a transition (``lifecycle_msgs/Transition`` id); whether it succeeded."""
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.id = transition_id
        return self._client.call(self.change, request, timeout_s).success
