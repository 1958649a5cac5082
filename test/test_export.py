"""`metric-solver export --format onnx`: graphs, sidecar, parity of the graphs with PyTorch."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from metric_solver_ros.backends.onnx_export import (
    SIDECAR_FILE,
    export_onnx,
    read_sidecar,
    weights_sha256,
)
from metric_solver_ros.checkpoint import default_model_path, load_checkpoint
from metric_solver_ros.cli import main
from metric_solver_ros.model import AnchorPool

INPUT_HW = (56, 70)  # small: the export's cost is mostly fixed, inference is quick


@pytest.fixture(scope='module')
def model():
    return load_checkpoint(default_model_path()).float().eval()


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp('onnx')
    assert main(['export', '--format', 'onnx', '--input-size', *map(str, INPUT_HW),
                 '--out', str(out)]) == 0
    return out


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sidecar_describes_the_export(exported, model):
    sidecar = json.loads((exported / SIDECAR_FILE).read_text())
    assert read_sidecar(exported) == sidecar
    config = model.config
    assert sidecar['input_hw'] == list(INPUT_HW) and sidecar['patch_hw'] == [4, 5]
    assert sidecar['output_hw'] == list(config.output_size(INPUT_HW))
    assert sidecar['anchor_pool_m'] == list(config.anchor_pool_m)
    pre = sidecar['preprocessing']
    assert pre['mean'] == list(config.mean) and pre['std'] == list(config.std)
    assert pre['color_order'] == 'rgb' and math.isclose(pre['scale'], 1 / 255)
    assert set(sidecar['outputs']) == {'d_sn_logit', 'mask_logit', 'd_tf_logit'}
    assert sidecar['decoding']['k_per_m'] == config.k
    assert sidecar['config'] == config.to_dict()
    source = sidecar['source']
    assert source['checkpoint'] == str(default_model_path())
    assert source['checkpoint_sha256'] == _sha256(default_model_path())
    assert source['weights_sha256'] == weights_sha256(model)
    for graph in sidecar['graphs'].values():
        assert graph['sha256'] == _sha256(exported / graph['file'])
    assert sidecar['exported_with']['opset'] == 17
    parity = sidecar['parity']
    assert parity['checked'] and parity['encoder_max_abs_diff'] < 1e-4
    assert parity['decoder_max_abs_diff'] < 1e-4


def test_graphs_declare_the_sidecar_shapes_and_a_dynamic_anchor_batch(exported):
    import onnx

    sidecar = read_sidecar(exported)
    for name, spec in sidecar['graphs'].items():
        graph = onnx.load(str(exported / spec['file']))
        onnx.checker.check_model(graph)
        assert {o.version for o in graph.opset_import if o.domain in ('', 'ai.onnx')} == {17}

        def shapes(values):
            return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                    for v in values}

        assert shapes(graph.graph.input) == spec['inputs'], name
        assert shapes(graph.graph.output) == spec['outputs'], name


def test_graphs_match_pytorch(exported, model):
    import onnxruntime as ort

    encoder = ort.InferenceSession(str(exported / 'encoder.onnx'),
                                   providers=['CPUExecutionProvider'])
    decoder = ort.InferenceSession(str(exported / 'decoder.onnx'),
                                   providers=['CPUExecutionProvider'])
    image = torch.randn(1, 3, *INPUT_HW, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.encode(image)
    got = encoder.run(None, {'image': image.numpy()})
    names = [o.name for o in encoder.get_outputs()]
    for i, (tokens, cls) in enumerate(features):
        np.testing.assert_allclose(got[names.index(f'tokens_{i}')], tokens.numpy(), atol=1e-4)
        np.testing.assert_allclose(got[names.index(f'cls_{i}')], cls.numpy(), atol=1e-4)
    pool = model.config.anchor_pool_m
    feeds = {f'tokens_{i}': got[names.index(f'tokens_{i}')] for i in range(4)}
    # one anchor, and a batch with the pool's ends and an anchor between two pool values
    for anchors in ([10.0], [pool[0], math.sqrt(pool[1] * pool[2]) * 1.1, pool[-1]]):
        anchors_m = torch.tensor(anchors, dtype=torch.float32)
        with torch.no_grad():
            expected = model.decode(features, anchors_m, (4, 5))
        out = decoder.run(list(expected), {**feeds, 'anchors_m': anchors_m.numpy()})
        for value, (key, reference) in zip(out, expected.items(), strict=True):
            assert value.shape == tuple(reference.shape), key
            np.testing.assert_allclose(value, reference.numpy(), atol=2e-4, err_msg=key)


def test_export_prints_what_it_wrote(tmp_path, capsys):
    # the fixture's run printed already; a bad size fails before exporting anything
    assert main(['export', '--format', 'onnx', '--input-size', '50', '70',
                 '--out', str(tmp_path / 'x')]) == 2
    assert 'multiples of the patch size 14' in capsys.readouterr().err
    with pytest.raises(ValueError, match='multiples'):
        export_onnx(load_checkpoint(default_model_path()), tmp_path / 'y', (56, 0))


def test_read_sidecar_refuses_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='sidecar'):
        read_sidecar(tmp_path)
    (tmp_path / SIDECAR_FILE).write_text(json.dumps({'format': 'something_else'}))
    with pytest.raises(ValueError, match='not a metric_solver_onnx sidecar'):
        read_sidecar(tmp_path)


def test_anchor_pool_interpolation_equals_the_searchsorted_formulation():
    """The exportable index (a count of smaller pool values) is searchsorted's, exactly."""
    torch.manual_seed(0)
    pool_m = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0)
    module = AnchorPool(pool_m, dim=6)
    anchors = torch.cat([torch.tensor(pool_m),
                         torch.exp(torch.empty(200).uniform_(math.log(0.5), math.log(80.0)))])
    log_pool, log_a = torch.log(torch.tensor(pool_m)), torch.log(anchors)
    hi = torch.searchsorted(log_pool, log_a).clamp(1, len(pool_m) - 1)
    t = ((log_a - log_pool[hi - 1]) / (log_pool[hi] - log_pool[hi - 1])).unsqueeze(1)
    expected = (1 - t) * module.embeddings[hi - 1] + t * module.embeddings[hi]
    torch.testing.assert_close(module(anchors), expected, rtol=0, atol=0)
    # at a pool anchor the embedding is exactly that anchor's
    torch.testing.assert_close(module(torch.tensor(pool_m)), module.embeddings.detach(),
                               rtol=0, atol=0)
