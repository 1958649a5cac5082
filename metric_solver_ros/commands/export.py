"""``metric-solver export``: the model as ONNX graphs for OpenVINO, ONNX Runtime or TensorRT.

Writes ``encoder.onnx``, ``decoder.onnx`` (dynamic anchor batch) and the ``metric_solver.json``
sidecar (preprocessing, anchor pool, output semantics, source checkpoint and its sha256, a parity
check against PyTorch); see ``metric_solver_ros.backends.onnx_export`` and README "Runtimes".

    metric-solver export --format onnx --out onnx_tiny
    metric-solver export --format onnx --checkpoint my.safetensors --input-size 266 350 --out dir
"""

from __future__ import annotations

import argparse
import pathlib

FORMATS = ('onnx',)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``metric-solver export``."""
    parser.add_argument('--format', choices=FORMATS, default='onnx', help='export format')
    parser.add_argument('--checkpoint', type=pathlib.Path, default=None,
                        help='Metric-Solver safetensors checkpoint (default: the bundled model)')
    parser.add_argument('--input-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='network input height and width [px], multiples of 14 (default: '
                             'the model config\'s input_size); the graphs are fixed to it')
    parser.add_argument('--out', type=pathlib.Path, required=True, help='output directory')
    parser.add_argument('--opset', type=int, default=None,
                        help='ONNX opset (default 17: the newest TensorRT 8.6 reads)')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the ONNX Runtime vs PyTorch parity check of the export')


def run(args: argparse.Namespace) -> int:
    """Export and print what was written."""
    from metric_solver_ros.backends.onnx_export import DEFAULT_OPSET, SIDECAR_FILE, export_onnx
    from metric_solver_ros.checkpoint import default_model_path, load_checkpoint

    path = args.checkpoint or default_model_path()
    model = load_checkpoint(path)
    input_hw = tuple(args.input_size) if args.input_size else model.config.input_size
    sidecar = export_onnx(model, args.out, input_hw, checkpoint=path,
                          opset=args.opset or DEFAULT_OPSET, verify=not args.no_verify)
    graphs = sidecar['graphs']
    print(f'exported {path} ({sidecar["config"]["preset"]}) for a {input_hw[1]}x{input_hw[0]} px '
          f'network input, opset {sidecar["exported_with"]["opset"]}:')
    for name in ('encoder', 'decoder'):
        file = args.out / graphs[name]['file']
        print(f'  {file} ({file.stat().st_size / 2**20:.1f} MiB)')
    print(f'  {args.out / SIDECAR_FILE}')
    parity = sidecar.get('parity', {})
    if parity.get('checked'):
        print(f'parity with PyTorch ({parity["runtime"]}): max |diff| encoder '
              f'{parity["encoder_max_abs_diff"]:.2g}, decoder logits '
              f'{parity["decoder_max_abs_diff"]:.2g}')
    return 0
