"""Make the bundled default model from a training run.

Copies the (EMA) weights of ``RUN/ckpt.safetensors`` into
``metric_solver_ros/weights/default.safetensors`` as float16 (half the size; the engine casts to
its precision when loading), keeping the model config and adding where it came from.

    python tools/bundle_default_model.py out/train_default
    python tools/bundle_default_model.py out/gpu_run /tmp/out/ckpt_fp16.safetensors   # elsewhere
"""

from __future__ import annotations

import pathlib
import sys

import torch

from metric_solver_ros.checkpoint import (
    default_model_path,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)


def main(run_dir: str, target: str | None = None) -> int:
    """Write the bundled model (or ``target``) from ``run_dir``; return a process exit code."""
    source = pathlib.Path(run_dir) / 'ckpt.safetensors'
    model = load_checkpoint(source).to(torch.float16)
    meta = read_checkpoint_metadata(source)
    # train_step, train_config and eval_metrics come along from the run's checkpoint.
    keep = {k: v for k, v in meta.items() if k not in ('format', 'format_version', 'config')}
    keep['bundled_from'] = str(source)
    keep['note'] = ('tiny preset trained from scratch on the synthetic world only: for demos and '
                    'tests, not for real-world accuracy')
    path = pathlib.Path(target) if target else default_model_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, metadata=keep)
    print(f'wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) from {source}')
    return 0


if __name__ == '__main__':
    sys.exit(main(*(sys.argv[1:3] or ['out/train_default'])))
