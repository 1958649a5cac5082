"""Declaring the parameter table of :mod:`metric_solver_ros.parameters` on an rclpy node.

Each parameter gets a ``ParameterDescriptor`` (description, range, choices, read-only). The
table and the validation of values stay in ``parameters.py``; here a mistyped or out-of-range
override becomes a :class:`~metric_solver_ros.process_life.StartupError` that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from metric_solver_ros.parameters import (
    PARAMETERS,
    ParamSpec,
    RuntimeSettings,
    initial_settings,
    validate_changes,
)
from metric_solver_ros.process_life import StartupError


def descriptor(spec: ParamSpec, pool_m: tuple[float, float]) -> ParameterDescriptor:
    """The descriptor of one parameter; ``pool_m`` is the anchor pool range [m] (anchors only)."""
    result = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        result.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.name in ('anchor', 'anchors'):
        # Numbers of any type (ints are common in YAML and on the command line) and an empty
        # list of any type are accepted here and validated by the node against the pool.
        result.dynamic_typing = True
        result.additional_constraints = f'anchor pool range [{pool_m[0]:g}, {pool_m[1]:g}] m'
    elif spec.float_range is not None:
        result.floating_point_range = [FloatingPointRange(
            from_value=float(spec.float_range[0]), to_value=float(spec.float_range[1]))]
    elif spec.int_range is not None:
        result.integer_range = [IntegerRange(
            from_value=spec.int_range[0], to_value=spec.int_range[1], step=spec.int_range[2])]
    return result


def _declare(node: Any, spec: ParamSpec, pool_m: tuple[float, float]) -> Any:
    """Declare one parameter and return its value; a mistyped override is a StartupError."""
    try:
        return node.declare_parameter(spec.name, spec.default, descriptor(spec, pool_m)).value
    except Exception as exc:  # rclpy's type/range exceptions differ between distros
        raise StartupError(f'parameter {spec.name}: {exc}') from exc


def declare_read_only(node: Any) -> dict[str, Any]:
    """Declare the parameters fixed at start-up; return name -> value.

    Raises:
        StartupError: If an override has the wrong type or is not one of the choices.
    """
    values = {}
    for spec in PARAMETERS:
        if spec.read_only:
            value = _declare(node, spec, (0.0, 0.0))
            if spec.choices and value not in spec.choices:
                raise StartupError(f'parameter {spec.name} must be one of '
                                   f'{", ".join(spec.choices)}, got {value!r}')
            values[spec.name] = value
    return values


def declare_dynamic(node: Any, pool_m: Sequence[float],
                    check_anchors: Callable[[Sequence[float]], tuple[float, ...]]
                    ) -> RuntimeSettings:
    """Declare the runtime parameters; return the settings their start-up values give.

    Args:
        node: The rclpy node.
        pool_m: The model's anchor pool [m] (ascending).
        check_anchors: The engine's anchor validation (``DepthEngine.validate_anchors``).

    Raises:
        StartupError: If an override has the wrong type or fails validation.
    """
    pool_range = (pool_m[0], pool_m[-1])
    startup = {spec.name: _declare(node, spec, pool_range)
               for spec in PARAMETERS if not spec.read_only}
    try:
        return validate_changes(initial_settings(), startup, check_anchors)
    except ValueError as exc:
        raise StartupError(f'invalid parameter at start-up: {exc}') from exc
