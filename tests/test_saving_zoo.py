"""Every save format round-trips on real architectures (residual, dense concat, SE + depthwise,
grouped convs).

One masked model and one export per architecture, shared by the format tests (module scope).
"""

import warnings

import numpy as np
import pytest
import torch

import chanprune
from chanprune.deploy.saving import load_program, load_pruned, save_program, save_pruned
from helpers import outputs_match

torchvision = pytest.importorskip("torchvision")
ARCHS = ["resnet50", "densenet121", "efficientnet_v2_s", "regnet_y_400mf"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=ARCHS)
def case(request):
    torch.manual_seed(0)
    name = request.param
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    side = "output" if name == "densenet121" else "input"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chanprune.mask(model, x, amount=0.3, side=side)
        pruned = chanprune.export(model, x, method="reorder")
    xb = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(xb)
    assert chanprune.count_params(pruned) < chanprune.count_params(model)
    return name, model, pruned, x, xb, ref


def test_pt2(case, tmp_path):
    name, _, pruned, x, xb, ref = case
    save_program(pruned, x, tmp_path / f"{name}.pt2")
    module = load_program(tmp_path / f"{name}.pt2").module()
    with torch.no_grad():
        assert outputs_match(ref, module(xb))


def test_spec_and_safetensors(case, tmp_path):
    name, model, pruned, x, xb, ref = case
    save_pruned(pruned, model, x, tmp_path / f"{name}.json", model_name=name)
    fresh = torchvision.models.get_model(name, weights=None)  # new random weights
    loaded = load_pruned(fresh, tmp_path / f"{name}.json")
    state = pruned.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    with torch.no_grad():
        assert outputs_match(ref, loaded(xb))


def test_onnx(case, tmp_path):
    pytest.importorskip("onnxscript")
    from chanprune.deploy import ort_session, to_onnx

    name, _, pruned, x, xb, ref = case
    session = ort_session(to_onnx(pruned, x, tmp_path / f"{name}.onnx"))
    (got,) = session.run(None, {session.get_inputs()[0].name: xb.numpy()})
    assert np.abs(got - ref.numpy()).max() <= 1e-4 * ref.abs().max().item()
