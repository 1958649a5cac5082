"""What rank 0 prepares for a distillation: teacher labels, the split, the starting weights.

A work folder (``<out stem>.distill``, ``distill.work_dir``) holds::

    labels/train/    RGB-D folder (data/rgbd_folder.py): rgb/*.png, depth/*.npy float32 [m]
    labels/holdout/  the same layout: the last frames, never trained on
    student_init.safetensors   the student's starting weights
    prepared.json    written last: the key of the settings, frame counts, the source
    run/             the training run (train.py's out_dir)
    report.json

Rank 0 writes it (:func:`prepare`: :func:`label_frames`, :func:`split_holdout`,
:func:`init_student`, the marker last); the other ranks wait for the marker
(:func:`wait_prepared`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time
from typing import TYPE_CHECKING, Any

from metric_solver_ros.frame_sources import FrameSource

if TYPE_CHECKING:
    from metric_solver_ros.distill import DistillOptions
    from metric_solver_ros.teacher import Teacher, TeacherFile

MARKER = 'prepared.json'
"""Written last by rank 0 once the labels and the starting weights are complete."""
STUDENT_INIT = 'student_init.safetensors'
"""The student's starting weights in the work folder (no ``train_step``: a new model)."""


def label_frames(teacher: Any, source: FrameSource, root: pathlib.Path,
                 short_side_px: int) -> int:
    """Write the teacher's depth of every frame as an RGB-D folder (PNG + float32 ``.npy``).

    Frames with a shorter side above ``short_side_px`` are first shrunk to it (area averaging):
    the teacher sees no more than its input size anyway, and the labels stay small.

    Args:
        teacher: A ``teacher.Teacher`` (``depth_m(rgb)``).
        source: The frames.
        root: The RGB-D folder to write.
        short_side_px: Largest shorter side of a stored frame [px].

    Returns:
        The number of frames written (named ``000000``, ``000001``, ... in source order).
    """
    import cv2

    from metric_solver_ros.data.rgbd_folder import write_rgbd_folder
    from metric_solver_ros.data.sample import Sample

    start_s = time.time()

    def samples():
        for index, (_, rgb) in enumerate(source.frames()):
            scale = short_side_px / min(rgb.shape[:2])
            if scale < 1.0:
                size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            yield Sample(rgb, teacher.depth_m(rgb), None, name=f'{index:06d}')
            if (index + 1) % 100 == 0:
                rate = (index + 1) / (time.time() - start_s)
                print(f'labelled {index + 1} frames ({rate:.1f} frames/s)', flush=True)

    return len(write_rgbd_folder(root, samples(), depth_format='npy'))


def split_holdout(labels: pathlib.Path, count: int, fraction: float) -> tuple[int, int]:
    """Move the last frames of ``labels/all`` to ``labels/holdout``, the rest to ``labels/train``.

    The held-out frames are the LAST ones, one block: neighbouring video or bag frames are near
    copies of each other, so frames picked throughout the sequence would be trained on in all
    but name. ``round(count * fraction)`` of them, at least one when ``fraction > 0``.

    Returns:
        ``(train frames, held-out frames)``.

    Raises:
        ValueError: No frame, or no training frame left.
    """
    held = max(round(count * fraction), 1) if fraction > 0 else 0
    if count - held < 1:
        raise ValueError(f'{count} frame(s): none left to train on after holding out {held} '
                         f'(--holdout-fraction {fraction:g})')
    everything = labels / 'all'
    for sub in ('rgb', 'depth'):
        (labels / 'holdout' / sub).mkdir(parents=True, exist_ok=True)
    names = sorted(p.stem for p in (everything / 'depth').iterdir())
    for name in names[count - held:]:
        for sub, ext in (('rgb', '.png'), ('depth', '.npy')):
            os.replace(everything / sub / f'{name}{ext}', labels / 'holdout' / sub / f'{name}{ext}')
    os.replace(everything, labels / 'train')
    return count - held, held


def read_marker(work: pathlib.Path) -> dict[str, Any] | None:
    """The marker's record (None: no complete preparation in ``work``)."""
    try:
        record = json.loads((work / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and 'key' in record else None


def write_marker(work: pathlib.Path, record: dict[str, Any]) -> None:
    """Write the marker atomically (a waiting rank never reads half of it)."""
    tmp = work / f'{MARKER}.tmp'
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, work / MARKER)


def wait_prepared(work: pathlib.Path, key: str, poll_s: float = 2.0) -> dict[str, Any]:
    """Ranks > 0: wait for rank 0's marker of ``key`` (torchrun stops us if rank 0 fails).

    A file, not a collective: a barrier would time out while a large set is being labelled.
    """
    while True:
        record = read_marker(work)
        if record is not None and record['key'] == key:
            return record
        time.sleep(poll_s)


def _encoder_fits(model: Any, state: dict[str, Any]) -> bool:
    """Whether ``state`` holds every encoder tensor of ``model`` in its shape (same encoder)."""
    return all(key in state and tuple(state[key].shape) == tuple(value.shape)
               for key, value in model.state_dict().items() if key.startswith('pretrained.'))


def init_student(preset: str, image_size: tuple[int, int], teacher: Teacher | None,
                 seed: int, overrides: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The student's starting weights and a description (several lines with an import report).

    The student is ``preset`` with ``input_size = image_size`` and the config ``overrides``
    (``TrainConfig.model``). With a ``teacher``: its encoder when the architectures match (all
    encoder tensors fit), else none of it; its head (DA-V2: into both heads,
    ``checkpoint.import_depth_anything_v2``; ours: every tensor of the same name and shape, the
    anchor pool only if it is the same) where shapes allow.
    """
    import torch

    from metric_solver_ros.checkpoint import (
        ImportReport,
        import_depth_anything_v2,
        official_encoder_settings,
    )
    from metric_solver_ros.model import create_model, get_config

    torch.manual_seed(seed)
    state = teacher.state_dict() if teacher is not None else {}
    dav2 = teacher is not None and teacher.file.kind == 'dav2-metric'
    settings = official_encoder_settings(state) if dav2 else {}
    model = create_model(get_config(preset, **{'input_size': tuple(image_size), **settings,
                                               **(overrides or {})}))
    if teacher is None:
        return model, f'a new {preset} model'
    encoder = _encoder_fits(model, state)
    if not encoder:
        state = {k: v for k, v in state.items() if not k.startswith('pretrained.')}
    if dav2:
        report = import_depth_anything_v2(model, state)
    else:
        report = ImportReport()
        targets = model.state_dict()
        same_pool = tuple(teacher.engine.pool_m) == tuple(model.config.anchor_pool_m)
        with torch.no_grad():
            for key, value in state.items():
                if key.startswith('anchor_pool.') and not same_pool:
                    report.skipped[key] = 'another anchor pool'
                elif key not in targets or targets[key].shape != value.shape:
                    report.skipped[key] = 'no tensor of this name and shape in the student'
                else:
                    targets[key].copy_(value)
                    report.loaded.append(key)
        report.missing = [k for k in targets if k not in report.loaded
                          and k != 'anchor_pool.anchors_m']
    what = 'encoder and head' if encoder else 'head only (the encoders differ)'
    name = teacher.file.path.name
    return model, (f'{preset} student from the {teacher.file.kind} teacher {name} ({what})\n'
                   f'{report.format()}')


def prepare(opts: DistillOptions, cfg: Any, teacher_file: TeacherFile, work: pathlib.Path,
            key: str) -> dict[str, Any]:
    """Rank 0: label, split and write the starting weights once; return the ``MARKER`` record.

    Raises:
        ValueError: ``work`` holds a preparation of other settings.
    """
    import torch

    from metric_solver_ros.checkpoint import save_checkpoint
    from metric_solver_ros.teacher import load_teacher

    done = read_marker(work)
    if done is not None:
        if done['key'] != key:
            raise ValueError(f'{work} holds a distillation with other settings (teacher, frames, '
                             f'hold-out, preset, image size or seed); remove it or choose another '
                             f'--out')
        print(f'reusing the labels and starting weights in {work}', flush=True)
        return done
    for stale in ('labels', 'run'):
        shutil.rmtree(work / stale, ignore_errors=True)
    teacher = load_teacher(teacher_file, cfg.device, opts.teacher_input_px)
    short_side_px = max(teacher.input_px, min(cfg.image_size))
    print(f'labelling {opts.source.describe()} with {teacher_file.kind} '
          f'{teacher_file.path.name} (frames shrunk to a short side of {short_side_px} px)',
          flush=True)
    count = label_frames(teacher, opts.source, work / 'labels' / 'all', short_side_px)
    trained, held = split_holdout(work / 'labels', count, opts.holdout_fraction)
    model, origin = init_student(opts.preset, cfg.image_size,
                                 teacher if opts.init_from_teacher else None, cfg.seed, cfg.model)
    print(origin, flush=True)
    save_checkpoint(work / STUDENT_INIT, model, {'distill_init': origin.splitlines()[0]})
    del teacher, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    record = {'key': key, 'source': opts.source.describe(), 'frames': count,
              'train_frames': trained, 'held_out_frames': held,
              'holdout_fraction': opts.holdout_fraction, 'init': origin.splitlines()[0]}
    write_marker(work, record)
    return record
