r"""``metric-solver convert``: a Metric-Solver checkpoint initialised from official weights.

Example::

    metric-solver convert --from dinov2 dinov2_vits14_pretrain.pth --preset vits \
        --out vits_init.safetensors
    metric-solver convert --from dav2 depth_anything_v2_vits.pth --preset vits \
        --anchor-pool 0.5 1 2 4 --input-size 364 490 --out vits_dav2_init.safetensors

Parts the file does not provide (the anchor pool, the mask projection, the far head for
``--from dinov2``, ...) keep a seeded random initialisation.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``convert`` options."""
    parser.add_argument('--from', dest='source', required=True, choices=('dinov2', 'dav2'),
                        help='kind of file: an official DINOv2 backbone (dinov2_vit*14_pretrain'
                             '.pth) or a Depth Anything V2 model (depth_anything_v2_vit*.pth)')
    parser.add_argument('path', help='the official weight file (.pth, or .safetensors)')
    parser.add_argument('--preset', default='vits',
                        help='model preset matching the file (default: vits; see '
                             '`metric-solver info PRESET`)')
    parser.add_argument('--out', required=True, help='output .safetensors checkpoint')
    parser.add_argument('--anchor-pool', type=float, nargs='+', metavar='M',
                        help='anchor pool depths [m], strictly increasing (default: the preset)')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='default network input [px], multiples of 14 (default: preset)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random initialisation of what is not imported')


def run(args: argparse.Namespace) -> int:
    """Build the preset, import the file, print the report and save the checkpoint."""
    import pathlib

    import torch

    from metric_solver_ros.checkpoint import (
        CheckpointError,
        import_official,
        load_official_state_dict,
        save_checkpoint,
    )

    source, out = pathlib.Path(args.path), pathlib.Path(args.out)
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ValueError(f'--out {out} would overwrite the input file')
    overrides = {}
    if args.anchor_pool:
        overrides['anchor_pool_m'] = tuple(args.anchor_pool)
    if args.input_size:
        overrides['input_size'] = tuple(args.input_size)
    state = load_official_state_dict(source)
    torch.manual_seed(args.seed)
    try:
        model, report, _ = import_official(state, args.preset, args.source, **overrides)
    except CheckpointError as error:
        raise ValueError(f'{source}: {error}\nwrong --preset or --from?') from None
    print(f'{source} ({args.source}) -> preset {model.config.preset!r}'
          + (f' with {model.config.num_register_tokens} register tokens'
             if model.config.num_register_tokens else ''))
    print(report.format())
    save_checkpoint(out, model, metadata={'source': source.name, 'source_kind': args.source,
                                          'seed': str(args.seed)})
    print(f'wrote {out}')
    return 0
