"""Two CPU costs of a multi-anchor frame, in ONE run (issue 21).

- **covering fusion at image resolution**: the long way (``representation.decode`` of every
  anchor, then ``fusion.fuse_decoded(..., 'covering')``: per-anchor far maps and the per-pixel
  anchor pick of ``finest``, which the rule needs only where no anchor says near) against
  ``fusion.decode_covering`` (what the engine runs now); the maps are checked bit for bit;
- **OpenVINO's decoder graph**: compiled with the export's dynamic anchor axis (what the
  backend runs) and compiled for one anchor count with static shapes (tried: a small gain that
  varied from run to run, for a compile of about 0.5 s at every new count; not adopted).

Interleaved rounds, medians, the bundled model (or ``--checkpoint``) on a 640x480 image:

    python benchmarks/cpu_decode.py [--num-threads 2] [--rounds 5] [--iters 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics

ANCHORS_M = (2.0, 10.0, 40.0, 80.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default=None, help='default: the bundled model')
    parser.add_argument('--num-threads', type=int, default=2)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--input-size', type=int, default=196, help='network short side [px]')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--iters', type=int, default=10, help='timed runs per case and round')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    args = parser.parse_args()

    # Our package first: it sets OMP_WAIT_POLICY before torch loads OpenMP, as in the node.
    from metric_solver_ros.backends.graph import openvino_core, openvino_properties
    from metric_solver_ros.backends.onnx_export import DECODER_FILE, find_or_export
    from metric_solver_ros.backends.threads import apply_torch_threads
    from metric_solver_ros.checkpoint import default_model_path, load_checkpoint
    from metric_solver_ros.commands.bench import median_ms
    from metric_solver_ros.engine import network_input_size
    from metric_solver_ros.model.fusion import decode_covering, fuse_decoded
    from metric_solver_ros.model.representation import decode

    apply_torch_threads(args.num_threads)
    import numpy as np
    import torch
    import torch.nn.functional as F

    model = load_checkpoint(args.checkpoint or default_model_path()).float().eval()
    config = model.config
    net_hw = network_input_size((args.height, args.width), args.input_size, config.patch_size)
    anchors = torch.tensor(ANCHORS_M)
    with torch.inference_mode():
        x = torch.randn(1, 3, *net_hw, generator=torch.Generator().manual_seed(0))
        logits = model(x, anchors)
    # as the engine hands them over: at image resolution, the far map of the largest anchor only
    logits = {key: F.interpolate((value[-1:] if key == 'd_tf_logit' else value).float(),
                                 size=(args.height, args.width), mode='bilinear',
                                 align_corners=False) for key, value in logits.items()}

    def long_way():
        return fuse_decoded(decode(logits, anchors, config), anchors, config, 'covering')

    with torch.inference_mode():
        identical = bool(torch.equal(long_way(), decode_covering(logits, anchors, config)[0]))

    # OpenVINO: the export's decoder, dynamic anchor axis vs one static count
    export = find_or_export(model, None, net_hw) / DECODER_FILE
    core = openvino_core()
    properties = openvino_properties('CPU', 'fp32', args.num_threads)  # as the backend's
    with torch.inference_mode():
        features = model.encode(x)
    feeds = {f'tokens_{tap}': tokens.numpy() for tap, (tokens, _) in enumerate(features)}

    def compiled(count: int | None):
        graph = core.read_model(str(export))
        if count is not None:
            graph.reshape({'anchors_m': [count]})
        return core.compile_model(graph, 'CPU', properties).create_infer_request()

    requests = {'dynamic': compiled(None), 1: compiled(1), 4: compiled(4)}

    def run(request, count: int):
        request.infer({**feeds, 'anchors_m': np.asarray(ANCHORS_M[-count:], np.float32)},
                      share_inputs=True)

    cases = {
        'covering_long_way_ms': lambda: long_way(),
        'covering_now_ms': lambda: decode_covering(logits, anchors, config),
        'openvino_decoder1_dynamic_ms': lambda: run(requests['dynamic'], 1),
        'openvino_decoder1_static_ms': lambda: run(requests[1], 1),
        'openvino_decoder4_dynamic_ms': lambda: run(requests['dynamic'], 4),
        'openvino_decoder4_static_ms': lambda: run(requests[4], 4),
    }
    rounds = {name: [] for name in cases}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, fn in cases.items():
                rounds[name].append(median_ms(fn, 1, args.iters, lambda: None))
    result = {name: round(statistics.median(times), 2) for name, times in rounds.items()}
    result.update({
        'covering_now_over_long_way': round(result['covering_now_ms']
                                            / result['covering_long_way_ms'], 3),
        'covering_identical': identical,
        'openvino_static_over_dynamic_1': round(result['openvino_decoder1_static_ms']
                                                / result['openvino_decoder1_dynamic_ms'], 3),
        'openvino_static_over_dynamic_4': round(result['openvino_decoder4_static_ms']
                                                / result['openvino_decoder4_dynamic_ms'], 3),
        'image': [args.height, args.width], 'input_size': list(net_hw),
        'num_threads': args.num_threads, 'anchors_m': list(ANCHORS_M),
        'openvino': core.get_versions('CPU')['CPU'].build_number,
    })
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f'{key:>34}: {value}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
