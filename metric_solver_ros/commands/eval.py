r"""``metric-solver eval``: accuracy of the model (or of a recorded depth topic) on a rosbag.

Examples::

    metric-solver eval --bag my_bag --image-topic /camera/color/image_raw \\
        --depth-topic /camera/aligned_depth_to_color/image_raw --anchors 2 10 --fusion \\
        --cap 10 --flip-tta --out eval_out
    metric-solver eval --bag my_bag --pred-topic /depth/depth --cap 10 --out eval_topic
    metric-solver eval --synthetic indoor --seed 0 --frames 8 --anchors 10 --cap 10
    metric-solver eval --bag walk_bag --anchors 10 --cap 10 --temporal-filter scale
    metric-solver eval --bag my_bag --anchors 10 --fusion --cap 10 \\
        --baseline dav2-metric:depth_anything_v2_metric_hypersim_vits   # the peer, side by side

The bag is read offline and deterministically (header stamps, see ``metric_solver_ros.bagio``).
Outputs in ``--out``: ``metrics.json``, ``metrics.csv``, ``report.md`` and its PNG plots.
A bag's frames are consecutive: ``metrics.json`` also has ``temporal`` (depth over time, with
poses from the bag's ``/tf`` when it has them; ``--static-camera`` states a still camera when
it has not), and ``--temporal-filter`` runs every result through the node's temporal filter,
told how the camera moved between frames from those poses (``--motion-hint auto``, the default;
with ``--static-camera`` and no /tf: not at all), as the node is from ``odometry_topic``.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from metric_solver_ros.commands.common import (
    add_bag_arguments,
    add_model_arguments,
    check_bag_arguments,
    engine_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``metric-solver eval``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--synthetic', choices=('indoor', 'outdoor'),
                        help='evaluate on rendered synthetic scenes instead of a bag')
    bag = parser.add_argument_group('bag input')
    add_bag_arguments(bag, bag_group=source, uses={
        '--camera-info-topic': 'its intrinsics are recorded in the config',
        '--max-frames': 'a frame is an image paired with its depth'})
    bag.add_argument('--pred-topic', default=None,
                     help='evaluate this depth topic of the bag as result "pred_topic"; '
                          'without --anchors / --fusion no model is loaded')
    bag.add_argument('--tolerance-ms', type=float, default=20.0,
                     help='largest header-stamp difference of an image and its depth [ms] '
                          '(default: %(default)s)')
    synthetic = parser.add_argument_group('synthetic input')
    synthetic.add_argument('--seed', type=int, default=0, help='first scene seed')
    synthetic.add_argument('--frames', type=int, default=8, help='number of synthetic scenes')
    synthetic.add_argument('--size', type=int, nargs=2, default=(240, 320), metavar=('H', 'W'),
                           help='synthetic image size [px] (default: 240 320)')
    model = add_model_arguments(parser)
    model.add_argument('--anchors', type=float, nargs='+', default=None, metavar='M',
                       help='anchors [m], each evaluated separately (default: 2 10 40 unless '
                            'only --pred-topic is evaluated)')
    model.add_argument('--fusion', action='store_true',
                       help='also evaluate multi-anchor fusion of all anchors ("fusion")')
    model.add_argument('--baseline', action='append', default=[],
                       metavar='KIND:PATH_OR_NAME[:MAX_DEPTH]',
                       help='also evaluate this teacher-kind model as a row "baseline=KIND" of '
                            'the same report, e.g. dav2-metric:depth_anything_v2_metric_'
                            'hypersim_vits (a registered name in the weights cache, or a file '
                            'with :MAX_DEPTH [m]); repeatable')
    model.add_argument('--baseline-input-size', type=int, default=None, metavar='PX',
                       help="shorter side of a baseline's network input [px] (default: 518 "
                            'for DA-V2)')
    model.add_argument('--auto-anchor', type=float, nargs='?', const=10.0, default=None,
                       metavar='M', help='also evaluate the node\'s auto anchor mode ("auto"), '
                       'starting at M (default 10) m; with a bag its switches are scored')
    metrics = parser.add_argument_group('metrics and outputs')
    metrics.add_argument('--cap', type=float, default=80.0,
                         help='GT cap [m]: 10 indoors, 80 outdoors in the paper '
                              '(default: %(default)s)')
    metrics.add_argument('--min-depth', type=float, default=1e-3,
                         help='GT values <= this [m] are invalid (default: %(default)s)')
    metrics.add_argument('--temporal-filter', choices=('off', 'scale', 'full'), default='off',
                         help='filter each result over time as the node does: scale smooths the '
                              'global scale, full also static pixels (default: %(default)s)')
    metrics.add_argument('--motion-hint', choices=('auto', 'off'), default='auto',
                         help='the temporal filter\'s stillness hint: auto tells it each '
                              'frame\'s camera motion from the bag\'s /tf poses when it has '
                              'them (else a still camera with --static-camera, else nothing); '
                              'off: the filter is blind (default: %(default)s)')
    metrics.add_argument('--static-camera', action='store_true',
                         help='the camera of the bag is still (temporal metrics of a bag '
                              'without /tf: GT holes then count as static pixels)')
    metrics.add_argument('--examples', type=int, default=3,
                         help='example frames drawn in the report (default: %(default)s)')
    metrics.add_argument('--out', type=pathlib.Path, default=pathlib.Path('eval_out'),
                         help='output directory (default: %(default)s)')


def _check(args: argparse.Namespace) -> None:
    """Reject inconsistent options with a ValueError that names them."""
    if not 0.0 < args.min_depth < args.cap:  # > 0: predictions are clipped to it (log metrics)
        raise ValueError(f'need 0 < --min-depth < --cap, got {args.min_depth} and {args.cap}')
    if args.pred_topic is not None and args.pred_topic == args.depth_topic:
        raise ValueError(f'--pred-topic and --depth-topic are both {args.depth_topic}: a '
                         'prediction is scored against a different ground-truth topic')
    if args.tolerance_ms < 0:
        raise ValueError(f'--tolerance-ms must be >= 0, got {args.tolerance_ms}')
    check_bag_arguments(args)
    if args.synthetic and args.pred_topic:
        raise ValueError('--pred-topic needs --bag')
    if args.synthetic and args.static_camera:
        raise ValueError('--static-camera needs --bag: --synthetic scenes are not consecutive')
    if args.synthetic and args.frames < 1:
        raise ValueError(f'--frames must be >= 1, got {args.frames}')
    if args.anchors is not None and any(not a > 0 for a in args.anchors):
        raise ValueError(f'anchors must be > 0 m, got {args.anchors}')
    from metric_solver_ros.teacher import parse_teacher

    for text in args.baseline:
        parse_teacher(text)  # a malformed --baseline fails before anything is read


def baseline_predictors(args: argparse.Namespace) -> tuple[list[Any], list[dict[str, Any]]]:
    """The ``--baseline`` predictors (rows ``baseline=KIND``) and their records for the config.

    Two baselines of one kind are told apart by their file: ``baseline=KIND:FILE``.
    """
    from metric_solver_ros.teacher import (
        find_teacher,
        load_teacher,
        parse_teacher,
        teacher_predictor,
    )

    files = [find_teacher(parse_teacher(text)) for text in args.baseline]
    kinds = [f.kind for f in files]
    predictors, records = [], []
    for file in files:
        name = f'baseline={file.kind}' + (f':{file.path.name}' if kinds.count(file.kind) > 1
                                          else '')
        teacher = load_teacher(file, args.device, args.baseline_input_size)
        predictors.append(teacher_predictor(teacher, name))
        records.append({'name': name, **file.describe(), 'input_px': teacher.input_px})
    return predictors, records


def sibling_info_topic(image_topic: str, topics: dict[str, str]) -> str | None:
    """The CameraInfo beside an image topic (image_transport naming), if the bag has it.

    ``/camera/color/image_raw`` and ``/camera/color/image_raw/compressed`` ->
    ``/camera/color/camera_info``.
    """
    from metric_solver_ros.bagio import CAMERA_INFO

    base = image_topic.removesuffix('/compressed')
    topic = base.rsplit('/', 1)[0] + '/camera_info'
    return topic if topics.get(topic) == CAMERA_INFO else None


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """Return the options as JSON-friendly values."""
    return {key: (str(value) if isinstance(value, pathlib.Path) else value)
            for key, value in vars(args).items() if not key.startswith('_')}


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the outputs; return 0, or raise ValueError / FileNotFoundError."""
    from metric_solver_ros import eval_report, evaluation

    _check(args)
    config = _config(args)
    use_model = (args.pred_topic is None or args.anchors is not None or args.fusion
                 or args.auto_anchor is not None)
    anchors = tuple(dict.fromkeys(args.anchors or evaluation.DEFAULT_EVAL_ANCHORS_M))

    if args.bag is not None:
        from metric_solver_ros.bagio import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, check_topics

        topics = check_topics(args.bag, {
            '--image-topic': (args.image_topic, (IMAGE, COMPRESSED_IMAGE)),
            '--depth-topic': (args.depth_topic, (IMAGE,)),
            '--pred-topic': (args.pred_topic, (IMAGE,)),
            '--camera-info-topic': (args.camera_info_topic, (CAMERA_INFO,))})
        info_topic = args.camera_info_topic or sibling_info_topic(args.image_topic, topics)
        frames: Any = evaluation.BagFrames(
            args.bag, args.image_topic, args.depth_topic, pred_topic=args.pred_topic,
            tolerance_ns=round(args.tolerance_ms * 1e6), max_frames=args.max_frames,
            info_topic=info_topic)
        config['poses'] = frames.poses is not None
        config['warp_intrinsics_topic'] = info_topic if frames.intrinsics else None
        stats = frames.stats
        config['pairing'] = {'messages': stats.messages, 'matched_frames': stats.matched,
                             'evaluated_frames': len(frames),
                             'max_abs_dt_ms': stats.max_abs_dt_ns / 1e6}
        if len(frames) == 0:
            partners = 'a depth and a prediction' if args.pred_topic else 'a depth'
            raise ValueError(
                f'no image in {args.bag} has {partners}'
                f' within {args.tolerance_ms:g} ms (messages: {stats.messages}); check the topics '
                'and --tolerance-ms')
        if args.camera_info_topic:
            from metric_solver_ros.bagio import first_message
            from metric_solver_ros.conversions import camera_info_to_intrinsics

            info = first_message(args.bag, args.camera_info_topic)
            config['intrinsics'] = (None if info is None
                                    else list(camera_info_to_intrinsics(info)))
        total = len(frames)
    else:
        from metric_solver_ros.data.synthetic import render_scene

        height, width = args.size
        samples = (render_scene(args.synthetic, args.seed + i, height, width)
                   for i in range(args.frames))
        frames = evaluation.sample_frames(samples)
        total = args.frames

    predictors = []
    if use_model:
        engine = engine_from_args(args)
        config.update(anchors=list(anchors), device=str(engine.device),
                      checkpoint=str(args.checkpoint) if args.checkpoint else 'bundled default',
                      precision=str(engine.dtype).replace('torch.', ''),
                      model=getattr(engine.config, 'preset', None))
        auto = None
        if args.auto_anchor is not None:
            from metric_solver_ros.anchor_modes import AnchorSelector

            auto = AnchorSelector(engine.pool_m, engine.validate_anchors(args.auto_anchor)[0])
        engine_predictor = evaluation.EnginePredictor(engine, anchors, fusion=args.fusion,
                                                      auto=auto)
        predictors.append(engine_predictor)
    else:
        config.update(anchors=None, fusion=False, checkpoint=None, device=None, precision=None,
                      flip_tta=None)
    if args.pred_topic:
        predictors.append(evaluation.topic_predictor)
    if args.baseline:
        baselines, config['baseline'] = baseline_predictors(args)
        predictors.extend(baselines)
    predictor = evaluation.combine_predictors(*predictors)
    filtered = None
    if args.temporal_filter != 'off':
        predictor = filtered = evaluation.FilteredPredictor(
            predictor, args.temporal_filter, motion_hint=args.motion_hint == 'auto',
            still_camera=args.static_camera)

    result = evaluation.evaluate(
        frames, predictor, min_depth_m=args.min_depth, cap_m=args.cap, examples=args.examples,
        total=total, temporal=args.bag is not None, static_camera=args.static_camera)
    if use_model and args.auto_anchor is not None and args.bag is not None:
        result.extra['anchor_switches'] = engine_predictor.switches.summary()
    if filtered is not None:  # frames whose camera motion the filter was told
        config['motion_hint_frames'] = filtered.hinted_frames
    paths = eval_report.write_outputs(result, args.out, config)
    print(f'{result.frames} frames, cap {args.cap:g} m (mean over frames):')
    for name, aggregator in result.results.items():
        means = aggregator.frame_mean()
        cells = '  '.join(f'{key} {means[key]:.4f}' if means[key] is not None else f'{key} -'
                          for key in ('delta1', 'abs_rel', 'rmse', 'delta1_aligned',
                                      'scale_error', 'scale_slope'))
        print(f'  {name:>12}  {cells}')
    for name, series in result.temporal.items():
        values = series.summary()
        cells = '  '.join(f'{key} {values[key]:.4f}' if values[key] is not None else f'{key} -'
                          for key in ('scale_jitter', 'flicker', 'warped_error'))
        print(f'  {name:>12}  {cells}  (over time, filter {args.temporal_filter})')
    print(f'wrote {paths["json"]}, {paths["csv"]}, {paths["report"]}')
    return 0
