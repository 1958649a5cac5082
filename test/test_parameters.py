"""Validation of runtime parameter changes (the single path for anchor changes)."""

import array
import math

import pytest

from metric_solver_ros.parameters import (
    PARAMETERS,
    initial_settings,
    markdown_table,
    validate_changes,
)

POOL = (0.5, 120.0)


def check_anchors(values):
    out = []
    for v in values:
        if not math.isfinite(v) or v <= 0 or not POOL[0] <= v <= POOL[1]:
            raise ValueError(f'anchor {v} m is outside the pool')
        out.append(v)
    return tuple(sorted(set(out)))


def test_defaults_are_valid():
    settings = initial_settings()
    assert settings.fixed_anchors == (settings.anchor,)
    assert settings.roi_or_none is None


@pytest.mark.parametrize('changes, attribute, expected', [
    ({'anchor': 2}, 'anchor', 2.0),
    ({'anchor': 0.5}, 'anchor', 0.5),
    ({'anchors': [40.0, 2, 10.0]}, 'anchors', (2.0, 10.0, 40.0)),
    ({'anchors': []}, 'anchors', ()),
    ({'anchors': None}, 'anchors', ()),
    ({'anchor_mode': 'auto'}, 'anchor_mode', 'auto'),
    ({'roi': [1, 2, 3, 4]}, 'roi', (1, 2, 3, 4)),
    ({'roi': array.array('q', [1, 2, 3, 4])}, 'roi', (1, 2, 3, 4)),  # as rclpy may pass it
    ({'anchors': array.array('d', [4.0, 2.0])}, 'anchors', (2.0, 4.0)),
    ({'far_limit': 80.0}, 'far_limit', 80.0),
    ({'points_stride': 4}, 'points_stride', 4),
    ({'flip_tta': True}, 'flip_tta', True),
])
def test_valid_changes_apply(changes, attribute, expected):
    new = validate_changes(initial_settings(), changes, check_anchors)
    assert getattr(new, attribute) == expected


@pytest.mark.parametrize('changes, reason', [
    ({'anchor': 0.0}, 'outside'),
    ({'anchor': -1.0}, 'outside'),
    ({'anchor': float('nan')}, 'outside'),
    ({'anchor': float('inf')}, 'outside'),
    ({'anchor': 500.0}, 'outside'),
    ({'anchor': 'far'}, 'must be a number'),
    ({'anchor': True}, 'must be a number'),
    ({'anchors': [2.0, float('nan')]}, 'outside'),
    ({'anchors': ['a']}, 'must be a number'),
    ({'anchor_mode': 'semantic'}, 'anchor_mode must be one of'),
    ({'roi': [1, 2, 3]}, 'roi must be 4 integers'),
    ({'roi': [1, 2, -3, 4]}, 'roi must be 4 integers'),
    ({'far_limit': float('inf')}, 'finite'),
    ({'points_stride': 0}, 'points_stride'),
    ({'flip_tta': 1}, 'boolean'),
    ({'device': 'cpu'}, 'cannot be changed at runtime'),
    ({'nonsense': 1}, 'cannot be changed at runtime'),
])
def test_invalid_changes_are_refused_and_nothing_changes(changes, reason):
    current = initial_settings()
    with pytest.raises(ValueError, match=reason):
        validate_changes(current, {'anchor': 2.0, **changes}, check_anchors)
    assert current == initial_settings()


def test_readme_table_lists_every_parameter():
    table = markdown_table()
    for spec in PARAMETERS:
        assert f'| `{spec.name}` |' in table


def test_readme_parameter_table_is_current():
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[1] / 'README.md').read_text()
    start = readme.index('<!-- parameters-table')
    start = readme.index('\n', start) + 1
    end = readme.index('<!-- end parameters-table -->')
    assert readme[start:end].strip() == markdown_table().strip()
