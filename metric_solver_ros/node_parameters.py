"""Declaring the parameter table of :mod:`metric_solver_ros.parameters` on an rclpy node.

Each parameter gets a ``ParameterDescriptor`` (description, range, choices, read-only). The
table and the validation of values stay in ``parameters.py``; here a mistyped or out-of-range
override becomes a :class:`~metric_solver_ros.process_life.StartupError` that names the
parameter and the type it takes. Every parameter is declared before the model is loaded (the
lifecycle node has none until ``configure``); the anchors are checked against the model's
pool once it is (:func:`settings_from`, :func:`describe_anchor_pool`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException

from metric_solver_ros.parameters import (
    ParamSpec,
    RuntimeSettings,
    initial_settings,
    parameter_table,
    validate_changes,
)
from metric_solver_ros.process_life import StartupError

_ANCHOR_PARAMETERS = ('anchor', 'anchors')


def descriptor(spec: ParamSpec, pool_m: Sequence[float] | None = None) -> ParameterDescriptor:
    """The descriptor of one parameter; ``pool_m`` is the model's anchor pool [m] (anchors)."""
    result = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        result.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.name in _ANCHOR_PARAMETERS:
        # Numbers of any type (ints are common in YAML and on the command line) and an empty
        # list of any type are accepted here and validated by the node against the pool.
        result.dynamic_typing = True
        result.additional_constraints = (
            f'anchor pool range [{pool_m[0]:g}, {pool_m[-1]:g}] m' if pool_m
            else 'within the model\'s anchor pool (checked when the model is loaded)')
    elif spec.float_range is not None:
        result.floating_point_range = [FloatingPointRange(
            from_value=float(spec.float_range[0]), to_value=float(spec.float_range[1]))]
    elif spec.int_range is not None:
        result.integer_range = [IntegerRange(
            from_value=spec.int_range[0], to_value=spec.int_range[1], step=spec.int_range[2])]
    return result


def expected_type(spec: ParamSpec) -> str:
    """The parameter's type in words, for error messages (``flip_tta:=maybe``)."""
    default = spec.default
    if isinstance(default, bool):
        return 'a boolean (true or false)'
    if isinstance(default, int):
        return 'an integer'
    if isinstance(default, float):
        return 'a number (e.g. 2.0)'
    if isinstance(default, str):
        return f'a string ({", ".join(spec.choices)})' if spec.choices else 'a string'
    if spec.name in _ANCHOR_PARAMETERS:
        return 'a list of numbers (e.g. [2.0, 10.0])'
    return 'a list of integers (e.g. [0, 0, 0, 0])'


def _declare(node: Any, spec: ParamSpec) -> Any:
    """Declare one parameter and return its value; a mistyped override is a StartupError."""
    try:
        return node.declare_parameter(spec.name, spec.default, descriptor(spec)).value
    except InvalidParameterTypeException as exc:
        # rclpy's text names types by number on some distros ("expected '1' got '4'"): say it
        # in words, with the value given (the override rclpy keeps for the node).
        given = getattr(node, '_parameter_overrides', {}).get(spec.name)
        got = f', got {given.value!r}' if given is not None else f' ({exc})'
        raise StartupError(f'parameter {spec.name} must be {expected_type(spec)}{got}'
                           ) from exc
    except Exception as exc:  # out of range (rclpy's exception types differ between distros)
        raise StartupError(f'parameter {spec.name}: {exc}') from exc


def declare_parameters(node: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Declare every parameter of the table on ``node``.

    Returns:
        ``(read_only, dynamic)``: name -> value of the parameters fixed at start-up and of
        those that can change at runtime (validated by :func:`settings_from`).

    Raises:
        StartupError: If an override has the wrong type or is not one of the choices.
    """
    read_only, dynamic = {}, {}
    for spec in parameter_table():
        value = _declare(node, spec)
        if spec.read_only:
            if spec.choices and value not in spec.choices:
                raise StartupError(f'parameter {spec.name} must be one of '
                                   f'{", ".join(spec.choices)}, got {value!r}')
            read_only[spec.name] = value
        else:
            dynamic[spec.name] = value
    return read_only, dynamic


def dynamic_values(node: Any) -> dict[str, Any]:
    """The current values of the runtime parameters (name -> value)."""
    return {spec.name: node.get_parameter(spec.name).value
            for spec in parameter_table() if not spec.read_only}


def settings_from(values: Mapping[str, Any],
                  check_anchors: Callable[[Sequence[float]], tuple[float, ...]]
                  ) -> RuntimeSettings:
    """The settings that the runtime parameters' values give.

    Args:
        values: Name -> value of every runtime parameter.
        check_anchors: The engine's anchor validation (``DepthEngine.validate_anchors``).

    Raises:
        StartupError: If a value fails validation (the text says which and why).
    """
    try:
        return validate_changes(initial_settings(), values, check_anchors)
    except ValueError as exc:
        raise StartupError(f'invalid parameter: {exc}') from exc


def describe_anchor_pool(node: Any, pool_m: Sequence[float]) -> None:
    """Put the loaded model's pool range into the anchors' descriptors (``param describe``)."""
    table = {spec.name: spec for spec in parameter_table()}
    for name in _ANCHOR_PARAMETERS:
        node.set_descriptor(name, descriptor(table[name], pool_m))
