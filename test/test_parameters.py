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


def test_fusion_rules_come_from_their_home():
    from metric_solver_ros.model.fusion import DEFAULT_FUSION, FUSION_RULES
    from metric_solver_ros.parameters import SPECS, complete_spec

    spec = complete_spec('fusion')
    assert spec.default == DEFAULT_FUSION and spec.choices == FUSION_RULES
    assert SPECS['fusion'].default is None  # completed lazily: the table imports no torch
    assert initial_settings().fusion == DEFAULT_FUSION
    for rule in FUSION_RULES:
        assert validate_changes(initial_settings(), {'fusion': rule}, check_anchors).fusion == rule
    with pytest.raises(ValueError, match='fusion must be one of finest, median'):
        validate_changes(initial_settings(), {'fusion': 'mean'}, check_anchors)


@pytest.mark.parametrize('mode', ['auto', 'roi'])
def test_an_anchor_alone_is_refused_while_the_mode_picks_it(mode):
    automatic = validate_changes(initial_settings(), {'anchor_mode': mode}, check_anchors)
    for change in ({'anchor': 2.0}, {'anchors': [2.0, 10.0]}):
        with pytest.raises(ValueError, match=f'anchor_mode is {mode}: .*set anchor_mode to fixed'):
            validate_changes(automatic, change, check_anchors)
    # with the mode in the same change (set_anchor's way), or a new start anchor for the mode
    fixed = validate_changes(automatic, {'anchor_mode': 'fixed', 'anchor': 2.0}, check_anchors)
    assert (fixed.anchor_mode, fixed.anchor) == ('fixed', 2.0)
    restart = validate_changes(automatic, {'anchor_mode': mode, 'anchor': 4.0}, check_anchors)
    assert (restart.anchor_mode, restart.anchor) == (mode, 4.0)


def test_expected_rate_and_the_point_cloud_defaults():
    settings = initial_settings()
    assert settings.expected_rate_hz == 0.0
    # no sky at 300-400 m in a costmap by default
    assert 0 < settings.points_max_range <= 50 and 0 < settings.far_limit < 300
    assert validate_changes(settings, {'expected_rate_hz': 30}, check_anchors).expected_rate_hz \
        == 30.0
    with pytest.raises(ValueError, match='expected_rate_hz must be a finite number >= 0'):
        validate_changes(settings, {'expected_rate_hz': -1.0}, check_anchors)
