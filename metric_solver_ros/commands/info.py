"""``metric-solver info``: the config and parameter counts of a checkpoint or a preset."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``info`` options."""
    parser.add_argument('model', help='a .safetensors checkpoint or a preset name (e.g. tiny)')


def run(args: argparse.Namespace) -> int:
    """Print the config, the metadata of a file and the parameter counts."""
    import pathlib

    from metric_solver_ros.checkpoint import read_checkpoint_config, read_checkpoint_metadata
    from metric_solver_ros.model import PRESETS, count_parameters, create_model, get_config

    path = pathlib.Path(args.model)
    if args.model in PRESETS and not path.exists():
        config = get_config(args.model)
        print(f'preset {args.model}')
    else:
        metadata = read_checkpoint_metadata(path)
        config = read_checkpoint_config(path)
        print(f'checkpoint {path} ({path.stat().st_size / 2**20:.1f} MiB)')
        for key in sorted(metadata):
            if key != 'config':
                print(f'  {key}: {metadata[key]}')
    print('config:')
    for key, value in config.to_dict().items():
        print(f'  {key}: {value}')
    counts = count_parameters(create_model(config, device='meta'))
    print('parameters:')
    for key, value in counts.items():
        print(f'  {key:12s} {value:>14,d}  ({value / 1e6:.2f} M)')
    return 0
