"""``metric-solver weights``: the registry of official checkpoints, and a resumable downloader.

Example::

    metric-solver weights list
    metric-solver weights list --json
    metric-solver weights get depth_anything_v2_metric_hypersim_vits
    metric-solver weights get depth_anything_v2_vitl --accept-license
    metric-solver weights get dinov2_vits14 --url http://mirror.local/dinov2_vits14_pretrain.pth

``get`` prints the cached file's path as the last line of stdout, so that
``metric-solver convert --from dav2 "$(metric-solver weights get NAME | tail -n 1)" ...`` works.
Failures (no network, HTTP error, checksum mismatch, disk full, licence not accepted) are one
line on stderr and exit status 2. See docs/WEIGHTS.md.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``list`` and ``get`` actions."""
    actions = parser.add_subparsers(dest='action', metavar='ACTION', required=True)
    listing = actions.add_parser('list', help='the registered checkpoints',
                                 description='Name, kind, preset, licence, size, sha256 and URL '
                                             'of every registered checkpoint.')
    listing.add_argument('--json', action='store_true',
                         help='a JSON list of {name, kind, preset, licence, size_bytes, url, '
                              'sha256} (null where unknown)')
    get = actions.add_parser('get', help='download a checkpoint into the cache, print its path',
                             description='Download NAME into the cache (resuming a partial '
                                         'download), verify its sha256 and print its path.')
    get.add_argument('name', metavar='NAME', help='registered name (see `weights list`)')
    get.add_argument('--url', help='download from here instead (a mirror, file://..., or a path)')
    get.add_argument('--sha256', metavar='HEX',
                     help='expected SHA-256 (wins over the registered one)')
    get.add_argument('--cache-dir', metavar='DIR',
                     help='cache directory (default: $METRIC_SOLVER_CACHE, else '
                          '~/.cache/metric_solver)')
    get.add_argument('--accept-license', action='store_true',
                     help='accept a non-commercial licence (Depth Anything V2 Base/Large)')


def run(args: argparse.Namespace) -> int:
    """Run ``list`` or ``get``."""
    return _list(args) if args.action == 'list' else _get(args)


def _list(args: argparse.Namespace) -> int:
    import json

    from metric_solver_ros.weights_registry import REGISTRY

    if args.json:
        print(json.dumps([entry.to_json() for entry in REGISTRY.values()], indent=2))
        return 0
    rows = [('NAME', 'KIND', 'PRESET', 'LICENCE', 'SIZE', 'MAX DEPTH', 'SHA256', 'URL')]
    for entry in REGISTRY.values():
        rows.append((
            entry.name, entry.kind, entry.preset,
            entry.licence + (' *' if entry.needs_acceptance else ''),
            'unknown' if entry.size_bytes is None else f'{entry.size_bytes / 2**20:.1f} MiB',
            '-' if entry.max_depth_m is None else f'{entry.max_depth_m:g} m',
            'unknown' if entry.sha256 is None else entry.sha256[:12] + '...',
            entry.url))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        print('  '.join(cells) + '  ' + row[-1])
    print('* non-commercial licence: `weights get` needs --accept-license. Full checksums: '
          '--json. Unknown checksums are recorded on the first download.')
    return 0


def _get(args: argparse.Namespace) -> int:
    import sys

    from metric_solver_ros.download import fetch_weights
    from metric_solver_ros.weights_registry import get_entry

    entry = get_entry(args.name)
    result = fetch_weights(entry, url=args.url, sha256=args.sha256, directory=args.cache_dir,
                           accept_license=args.accept_license)
    if result.recorded:
        print(f'metric-solver weights: warning: no checksum is published for {entry.name}; '
              f'recorded sha256 {result.sha256} of this copy, later runs verify against it',
              file=sys.stderr)
    state = 'downloaded' if result.downloaded else 'already in the cache'
    size_mib = result.path.stat().st_size / 2**20
    print(f'{entry.name}: {state} ({size_mib:.1f} MiB, sha256 {result.sha256})')
    print(result.path)
    return 0
