"""Temporal filter off / scale / full on synthetic sequences, every kind and motion, by the CLI.

For each kind (indoor: anchor 10 m, cap 10 m; outdoor: anchor 80 m, cap 80 m) and motion
(static, pan, forward) this runs ``metric-solver make-bag --synthetic-sequence`` once and
``metric-solver eval`` once per filter mode with the bundled model (plus the ``auto`` anchor
mode), printing every command, then tabulates delta1, scale_jitter, flicker and warped_error of
the fixed-anchor result and the auto mode's switches. ``scale`` and ``full`` run twice: with the
stillness hint from the bag's /tf (``--motion-hint auto``, hint ``tf``) and blind (``off``).

    python benchmarks/temporal_sequences.py --out /tmp/temporal [--frames 20] [--seed 22]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys

KINDS = {'indoor': ('10', '10'), 'outdoor': ('80', '80')}  # kind: (anchor [m], cap [m])
MOTIONS = ('static', 'pan', 'forward')
#: (filter, --motion-hint): the hint changes nothing with the filter off.
MODES = (('off', 'off'), ('scale', 'off'), ('scale', 'auto'), ('full', 'off'), ('full', 'auto'))
HINT_NAMES = {'off': 'blind', 'auto': 'tf'}


def _run(argv: list[str]) -> None:
    print('$ metric-solver ' + shlex.join(argv), flush=True)
    subprocess.run([sys.executable, '-m', 'metric_solver_ros.cli', *argv], check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=pathlib.Path, required=True)
    parser.add_argument('--frames', type=int, default=20)
    parser.add_argument('--seed', type=int, default=22)
    parser.add_argument('--size', nargs=2, default=('240', '320'), metavar=('H', 'W'))
    parser.add_argument('--kinds', nargs='+', default=list(KINDS))
    parser.add_argument('--motions', nargs='+', default=list(MOTIONS))
    args = parser.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in args.kinds:
        anchor, cap = KINDS[kind]
        for motion in args.motions:
            bag = args.out / f'{kind}_{motion}_bag'
            if not bag.exists():
                _run(['make-bag', '--out', str(bag), '--synthetic-sequence', kind, '--motion',
                      motion, '--frames', str(args.frames), '--seed', str(args.seed),
                      '--size', *args.size])
            for mode, hint in MODES:
                out = args.out / f'{kind}_{motion}_{mode}_{HINT_NAMES[hint]}'
                if not (out / 'metrics.json').exists():
                    _run(['eval', '--bag', str(bag), '--anchors', anchor, '--auto-anchor',
                          anchor, '--cap', cap, '--device', 'cpu', '--examples', '1',
                          '--temporal-filter', mode, '--motion-hint', hint, '--out', str(out)])
                data = json.loads((out / 'metrics.json').read_text())
                name = f'anchor={anchor}'
                temporal = data['temporal'][name]
                rows.append({
                    'kind': kind, 'motion': motion, 'filter': mode, 'hint': HINT_NAMES[hint],
                    'delta1': data['results'][name]['delta1'],
                    'abs_rel': data['results'][name]['abs_rel'],
                    'scale_jitter': temporal['scale_jitter'], 'flicker': temporal['flicker'],
                    'static_fraction': temporal['static_fraction'],
                    'warped_error': temporal['warped_error'],
                    'auto_delta1': data['results']['auto']['delta1'],
                    'auto_scale_jitter': data['temporal']['auto']['scale_jitter'],
                    'switches': data['anchor_switches']['switches'],
                    'median_jump': data['anchor_switches']['median_jump'],
                })
    (args.out / 'summary.json').write_text(json.dumps(rows, indent=2) + '\n')

    def cell(value: float | None, digits: int = 4) -> str:
        return '-' if value is None else f'{value:.{digits}f}'

    print('| kind | motion | filter | hint | delta1 | AbsRel | scale_jitter | flicker | static '
          'share | warped_error | auto delta1 | auto scale_jitter | switches | median jump |')
    print('|' + '---|' * 14)
    for r in rows:
        print(f'| {r["kind"]} | {r["motion"]} | {r["filter"]} | {r["hint"]} | '
              f'{cell(r["delta1"])} | '
              f'{cell(r["abs_rel"])} | {cell(r["scale_jitter"])} | {cell(r["flicker"])} | '
              f'{cell(r["static_fraction"], 3)} | {cell(r["warped_error"])} | '
              f'{cell(r["auto_delta1"])} | {cell(r["auto_scale_jitter"])} | {r["switches"]} | '
              f'{cell(r["median_jump"])} |')


if __name__ == '__main__':
    main()
