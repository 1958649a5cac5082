"""Sub-commands of ``metric-solver`` (see ``metric_solver_ros.cli``)."""
