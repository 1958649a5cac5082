"""The ``metric_solver`` node as a managed (lifecycle) node: executable ``depth_lifecycle_node``.

Same parameters, topics and services as ``depth_node`` (both are
:class:`~metric_solver_ros.node_core.DepthNodeCore`), driven through the standard
``lifecycle_msgs`` services ``~/change_state`` and ``~/get_state`` (Nav2's lifecycle manager,
``ros2 lifecycle set``):

- starts **unconfigured**: parameters declared (a mistyped override still ends the process),
  no model, no topics;
- ``configure`` loads the model and checks the device and the parameters against it; a failure
  answers FAILURE, logs the reason and stays unconfigured;
- ``activate`` starts processing images and publishing (also /diagnostics);
- ``deactivate`` stops it: the subscriptions stay, images are ignored, nothing is published;
- ``cleanup`` destroys the topics and the service and releases the model and its memory;
- ``shutdown`` from any state releases everything and the process exits (status 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from metric_solver_ros.node import NODE_NAME, run
from metric_solver_ros.node_core import DepthNodeCore
from metric_solver_ros.process_life import StartupError

if TYPE_CHECKING:
    from rclpy.lifecycle import LifecycleState


class MetricSolverLifecycleNode(LifecycleNode):
    """The depth node under lifecycle management (see the module docstring).

    Raises:
        StartupError: If a parameter override has the wrong type or value.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.core = DepthNodeCore(self)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model; FAILURE (logged with the reason) leaves the node unconfigured."""
        try:
            self.core.configure()
        except StartupError as exc:
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # rclpy would turn it into ERROR without a word
            self.get_logger().error(f'configure failed: {type(exc).__name__}: {exc}')
            return TransitionCallbackReturn.ERROR  # on_error releases what was made
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start publishing."""
        self.core.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop publishing (subscriptions stay)."""
        self.core.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the endpoints, release the model."""
        self.core.cleanup()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything from any state; the process then exits."""
        self.core.shutdown()
        self.get_logger().info(f'shut down from {state.label}: exiting')
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """An unexpected exception in a transition: release everything, back to unconfigured."""
        self.get_logger().error(f'error during a transition from {state.label}: releasing the '
                                f'model; the node is unconfigured')
        self.core.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Unsubscribe, stop the worker (finishing at most the frame in flight), destroy."""
        if hasattr(self, 'core'):  # absent when start-up failed
            self.core.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> NoReturn:
    """Entry point of ``depth_lifecycle_node``."""
    run(MetricSolverLifecycleNode, args)


if __name__ == '__main__':
    main()
