"""Writing an evaluation: ``metrics.json``, ``metrics.csv``, ``report.md`` and its plots.

:func:`metric_solver_ros.evaluation.evaluate` measures; this module only writes what it
measured (JSON strict: non-finite values become null; plots with matplotlib's Agg canvas, no
display needed).
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from metric_solver_ros.evaluation import EvalResult, Example
from metric_solver_ros.metrics import DEPTH_BANDS_M, METRIC_NAMES, clip_prediction, valid_gt_mask
from metric_solver_ros.temporal_metrics import TemporalSeries

#: Per-frame columns of ``metrics.csv`` after ``name, frame, frame_name, stamp_ns``.
CSV_VALUE_COLUMNS = ('n_pixels', *METRIC_NAMES, 'pred_nan_fraction', 'mask_accuracy',
                     'delta1_aligned', 'scale_ratio', 'gt_median_m', 'scale_error', 'scale_slope')


def jsonable(value: Any) -> Any:
    """Convert numpy scalars, paths and non-finite floats (-> None) for strict JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _fmt(value: float | None, digits: int = 4) -> str:
    """Format a metric for tables ('-' for None)."""
    return '-' if value is None else f'{value:.{digits}f}'


def write_outputs(result: EvalResult, out_dir: str | pathlib.Path,
                  config: Mapping[str, Any] | None = None) -> dict[str, pathlib.Path]:
    """Write ``metrics.json``, ``metrics.csv``, ``report.md`` and its PNG plots.

    Args:
        result: What :func:`evaluate` returned.
        out_dir: Output directory (created if needed; files are overwritten).
        config: Run configuration stored under ``config`` in ``metrics.json``.

    Returns:
        ``{'json', 'csv', 'report', <plot names>...: path}``.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    data['config'] = dict(config or {})
    paths = {'json': out / 'metrics.json', 'csv': out / 'metrics.csv', 'report': out / 'report.md'}
    paths['json'].write_text(json.dumps(jsonable(data), indent=2, allow_nan=False) + '\n')
    _write_csv(result, paths['csv'])
    plots = write_plots(result, out)
    paths.update(plots)
    paths['report'].write_text(_report_markdown(result, data, plots))
    return paths


def _write_csv(result: EvalResult, path: pathlib.Path) -> None:
    """One row per result and frame, then the ``mean`` and ``pixel_mean`` rows of each result."""
    with path.open('w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['name', 'frame', 'frame_name', 'stamp_ns', *CSV_VALUE_COLUMNS])
        for name, aggregator in result.results.items():
            for record in aggregator.per_frame:
                writer.writerow([name, record['frame'], record['frame_name'],
                                 '' if record['stamp_ns'] is None else record['stamp_ns'],
                                 *(_csv_value(record.get(c)) for c in CSV_VALUE_COLUMNS)])
            for label, values in (('mean', aggregator.frame_mean()),
                                  ('pixel_mean', aggregator.pixel_mean())):
                writer.writerow([name, label, '', '',
                                 *(_csv_value(values.get(c)) for c in CSV_VALUE_COLUMNS)])


def _csv_value(value: Any) -> str:
    """Format a CSV cell: empty for None, repr-exact floats."""
    if value is None:
        return ''
    return repr(float(value)) if isinstance(value, float) else str(value)


def write_plots(result: EvalResult, out: pathlib.Path) -> dict[str, pathlib.Path]:
    """Draw the report's PNGs with matplotlib's Agg canvas (no pyplot, no display).

    Args:
        result: Evaluation result.
        out: Directory for the PNGs.

    Returns:
        ``{plot name: path}``: ``abs_rel_vs_depth``, ``summary``, ``temporal`` (with temporal
        metrics) and ``example_<index>``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    paths: dict[str, pathlib.Path] = {}
    if not result.results:
        return paths

    fig = Figure(figsize=(7, 4), layout='constrained')
    ax = fig.add_subplot()
    top = 0.0
    for name, aggregator in result.results.items():
        centres, abs_rel, _ = aggregator.abs_rel_curve()
        ax.plot(centres, abs_rel, marker='o', markersize=3, label=name)
        top = max(top, float(np.nanmax(abs_rel, initial=0.0)))
    ax.set_xscale('log')
    plain = FuncFormatter(lambda value, _: f'{value:g}')
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis='x', which='minor', labelsize=7)
    ax.set_ylim(0.0, 1.15 * top if top > 0 else 1.0)
    ax.set_xlabel('ground-truth depth [m]')
    ax.set_ylabel('AbsRel (pixels pooled)')
    ax.set_title('AbsRel versus GT depth')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
    paths['abs_rel_vs_depth'] = out / 'abs_rel_vs_depth.png'
    fig.savefig(paths['abs_rel_vs_depth'], dpi=100)

    names = list(result.results)
    means = [result.results[n].frame_mean() for n in names]
    fig = Figure(figsize=(max(7.0, 1.2 * len(names) + 3), 3.5), layout='constrained')
    for k, metric in enumerate(('delta1', 'abs_rel')):
        ax = fig.add_subplot(1, 2, k + 1)
        values = [np.nan if m[metric] is None else m[metric] for m in means]
        bars = ax.bar(range(len(names)), values, color='tab:green' if k == 0 else 'tab:red')
        ax.bar_label(bars, fmt='%.3f', fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha='right')
        ax.set_title(f'{metric} (frame mean)')
        if metric == 'delta1':
            ax.set_ylim(0, 1.05)
    paths['summary'] = out / 'summary.png'
    fig.savefig(paths['summary'], dpi=100)

    if result.temporal:
        paths['temporal'] = out / 'temporal.png'
        _temporal_figure(result.temporal).savefig(paths['temporal'], dpi=100)

    for example in result.examples:
        key = f'example_{example.index:04d}'
        paths[key] = out / f'{key}.png'
        _example_figure(example, result.min_depth_m, result.cap_m).savefig(paths[key], dpi=100)
    return paths


def _temporal_figure(temporal: Mapping[str, TemporalSeries]) -> Any:
    """Per frame: ln(median prediction / median GT); per pair: flicker and warped error."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6.5), layout='constrained')
    axes = fig.subplots(3, 1, sharex=True)
    series = (('ln_scale_ratio', 'ln(median pred / median GT)', 0),
              ('flicker', 'flicker (static px)', 1), ('warped_error', 'warped error', 1))
    for ax, (key, label, offset) in zip(axes, series, strict=True):
        for name, values in temporal.items():
            ys = np.array([np.nan if v is None else v for v in getattr(values, key)], float)
            ax.plot(np.arange(len(ys)) + offset, ys, marker='o', markersize=2, label=name)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_title('Depth over time (pairs plotted at their later frame)')
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel('frame')
    return fig


def _example_figure(example: Example, min_depth_m: float, cap_m: float) -> Any:
    """Rows per result: image | prediction | GT | |error|; depth and error scales shared."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    gt = example.gt_depth_m
    valid = valid_gt_mask(gt, min_depth_m, cap_m)
    vmax = float(gt[valid].max()) if valid.any() else cap_m
    gt_shown = np.where(valid, gt, np.nan)
    errors = {name: np.where(valid, np.abs(clip_prediction(d, min_depth_m, cap_m) - gt), np.nan)
              for name, d in example.depth_m.items()}
    emax = max([float(np.nanmax(e)) for e in errors.values() if np.isfinite(e).any()] or [1.0])
    depth_cmap = colormaps['turbo'].with_extremes(bad='0.6')
    error_cmap = colormaps['magma'].with_extremes(bad='0.6')
    rows = max(1, len(example.depth_m))
    height, width = gt.shape
    fig = Figure(figsize=(12, 3.2 * rows * max(0.5, height / width) + 0.6), layout='constrained')
    axes = fig.subplots(rows, 4, squeeze=False)
    for row, (name, depth) in enumerate(example.depth_m.items() or [('', None)]):
        axes[row, 0].imshow(example.image)
        axes[row, 0].set_title(f'frame {example.name}', fontsize=9)
        if depth is not None:
            shown = clip_prediction(depth, min_depth_m, cap_m)
            image = axes[row, 1].imshow(shown, cmap=depth_cmap, vmin=0.0, vmax=vmax)
            axes[row, 1].set_title(f'{name} [m]', fontsize=9)
            error = axes[row, 3].imshow(errors[name], cmap=error_cmap, vmin=0.0, vmax=emax)
            axes[row, 3].set_title('|prediction - GT| [m]', fontsize=9)
            fig.colorbar(error, ax=axes[row, 3], shrink=0.8)
        image = axes[row, 2].imshow(gt_shown, cmap=depth_cmap, vmin=0.0, vmax=vmax)
        axes[row, 2].set_title('ground truth [m] (grey: not scored)', fontsize=9)
        fig.colorbar(image, ax=axes[row, 1:3].tolist(), shrink=0.8)
        for ax in axes[row]:
            ax.set_axis_off()
    return fig


def _report_markdown(result: EvalResult, data: Mapping[str, Any],
                     plots: Mapping[str, pathlib.Path]) -> str:
    """Return ``report.md``: configuration, tables and the plots (paths relative to it)."""
    config = data.get('config', {})
    lines = ['# Metric-Solver evaluation', '']
    source = config.get('bag') or (f"synthetic {config.get('synthetic')}"
                                   if config.get('synthetic') else 'in-memory frames')
    lines += [f'- source: `{source}`', f'- frames: {result.frames}',
              f'- valid GT: finite, {result.min_depth_m:g} m < GT <= {result.cap_m:g} m (cap), '
              'at GT resolution; predictions clipped to the same range, NaN counted as wrong',
              '- headline: mean over frames; "pixel mean" pools all valid pixels']
    for key in ('checkpoint', 'device', 'flip_tta', 'image_topic', 'depth_topic', 'pred_topic'):
        if config.get(key) not in (None, ''):
            lines.append(f'- {key}: `{config[key]}`')
    header = ['result', *METRIC_NAMES, 'mask acc', 'NaN frac', 'd1 median-aligned', 'scale err',
              'scale slope']
    for title, table in (('Mean over frames (headline)', data['results']),
                         ('Pixel mean (all valid pixels pooled)', data['pixel_mean'])):
        lines += ['', f'## {title}', '', '| ' + ' | '.join(header) + ' |',
                  '|' + '---|' * len(header)]
        for name, values in table.items():
            cells = [_fmt(values.get(m), 3 if m == 'silog' else 4) for m in METRIC_NAMES]
            cells += [_fmt(values.get(k)) for k in ('mask_accuracy', 'pred_nan_fraction',
                                                     'delta1_aligned', 'scale_error',
                                                     'scale_slope')]
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    lines += ['', '## Per GT depth band (pixels pooled)', '']
    band_names = [name for name, _, _ in DEPTH_BANDS_M]
    lines += ['| result | metric | ' + ' | '.join(f'{b} m' for b in band_names) + ' |',
              '|' + '---|' * (len(band_names) + 2)]
    for name, bands in data['bands'].items():
        for metric in ('delta1', 'abs_rel', 'rmse', 'n_pixels'):
            cells = [str(bands[b][metric]) if metric == 'n_pixels' else _fmt(bands[b][metric])
                     for b in band_names]
            lines.append(f'| {name} | {metric} | ' + ' | '.join(cells) + ' |')
    lines += _consistency_markdown(data.get('anchor_consistency'))
    lines += _temporal_markdown(data.get('temporal'), config.get('temporal_filter'))
    lines += _switches_markdown(data.get('anchor_switches'))
    lines += _far_markdown(data['far_decisions'])
    lines += ['', '## Plots', '']
    for key, path in plots.items():
        lines += [f'![{key}]({path.name})', '']
    return '\n'.join(lines) + '\n'


def _consistency_markdown(consistency: Mapping[str, Any] | None) -> list[str]:
    """Report section on anchor consistency (empty without it)."""
    if not consistency:
        return []
    anchors = ', '.join(f'{a:g}' for a in consistency['anchors_m'])
    lines = ['', '## Anchor consistency', '',
             f'Anchors {anchors} m, {consistency["frames"]} frames. `scale_spread`: max / min '
             'over the anchors of the median predicted depth (1.0 = the same world at every '
             'anchor); `pixel_log_spread`: per-pixel max - min of ln depth, median over pixels. '
             'Means over frames.', '',
             '| band | scale_spread | pixel_log_spread | frames |', '|---|---|---|---|',
             f'| all | {_fmt(consistency["scale_spread"])} | '
             f'{_fmt(consistency["pixel_log_spread"])} | {consistency["frames"]} |']
    for band, values in consistency['bands'].items():
        lines.append(f'| {band} m | {_fmt(values["scale_spread"])} | '
                     f'{_fmt(values["pixel_log_spread"])} | {values["frames"]} |')
    return lines


def _temporal_markdown(temporal: Mapping[str, Mapping[str, Any]] | None,
                       filter_mode: str | None) -> list[str]:
    """Report section on depth over time (empty without temporal metrics)."""
    if not temporal:
        return []
    lines = ['', '## Over time', '',
             f'Consecutive frames in order (temporal filter: `{filter_mode or "off"}`). '
             '`scale_jitter`: std over frames of ln(median prediction / median GT); '
             '`scale_step`: median |frame-to-frame change| of it; `flicker`: median over static '
             'pixels of |frame-to-frame ln depth change|, mean over pairs (static: GT unchanged '
             'within 1 %, or GT holes of a still camera); `warped_error`: each frame\'s '
             'prediction carried into the next with the known camera motion, median |ln '
             'error| (needs poses and intrinsics). Plot: `temporal.png`.', '',
             '| result | frames | scale_jitter | scale_step | flicker | static share | '
             'warped_error | warped pairs | still camera from |', '|' + '---|' * 9]
    for name, values in temporal.items():
        lines.append(
            f'| {name} | {values["frames"]} | {_fmt(values["scale_jitter"])} | '
            f'{_fmt(values["scale_step"])} | {_fmt(values["flicker"])} | '
            f'{_fmt(values["static_fraction"], 3)} | {_fmt(values["warped_error"])} | '
            f'{values["warped_pairs"]} | {values["still_camera_from"]} |')
    return lines


def _switches_markdown(switches: Mapping[str, Any] | None) -> list[str]:
    """Report section on the auto anchor mode's switches (empty without it)."""
    if not switches:
        return []
    used = ', '.join(f'{a:g}' for a in switches['anchors_used_m'])
    return ['', '## Auto anchor switches', '',
            f'{switches["switches"]} switches in {switches["frames"]} frames (anchors used: '
            f'{used} m). `median_jump`: median over switches of |ln median depth| between the '
            'published depth and the old anchor\'s on the same frame (what the switch changes, '
            'after the scale handover); `raw jump`: the new anchor\'s own depth against the '
            'old (the anchors\' disagreement the handover hides); steps: median |ln median '
            'depth change| between consecutive frames.', '',
            '| median_jump | as a ratio | raw jump | step at switch | step otherwise |',
            '|---|---|---|---|---|',
            f'| {_fmt(switches["median_jump"])} | {_fmt(switches["median_jump_ratio"])} | '
            f'{_fmt(switches.get("median_raw_jump"))} | {_fmt(switches["step_at_switch"])} | '
            f'{_fmt(switches["step_otherwise"])} |']


def _far_markdown(far: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Report section on far (sky) decisions, for results that saw GT sky."""
    rows = {name: values for name, values in far.items() if values['sky_pixels']}
    lines = ['', '## Far decisions (sky)', '']
    if not rows:
        return [*lines, 'No GT sky (+inf) pixels in these frames.']
    limits = next(iter(rows.values()))['curve']['far_limit_m']
    lines += ['Share of GT sky pixels predicted beyond a far limit (+inf counts) and of GT '
              'surfaces (finite GT) predicted beyond it (lost as "too far"); "+inf" is what the '
              'model itself calls beyond its range.', '',
              '| result | sky px | ' + ' | '.join(
                  '+inf' if v is None else f'> {v:g} m' for v in limits) + ' |',
              '|' + '---|' * (len(limits) + 2)]
    for name, values in rows.items():
        sky = ' | '.join(_fmt(v, 3) for v in values['curve']['sky_beyond'])
        surface = ' | '.join(_fmt(v, 4) for v in values['curve']['surface_beyond'])
        lines += [f'| {name}: sky | {values["sky_pixels"]} | {sky} |',
                  f'| {name}: surfaces | {values["surface_pixels"]} | {surface} |']
    return lines
