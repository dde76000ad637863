"""The torchvision zoo: every classification model masks and exports exactly (issue 2), and
mask and export leave each model's modules as they were (issue 24).

Random init (no downloads). One model object per test: the capture is shared between mask()
and export(); the constrained run starts again from the saved weights.
"""

import warnings

import pytest
import torch

import chanprune
from helpers import outputs_match

torchvision = pytest.importorskip("torchvision")

ALL = torchvision.models.list_models(module=torchvision.models)
DEEP = [
    "resnet50",
    "densenet121",
    "efficientnet_v2_s",
    "mobilenet_v3_large",
    "regnet_y_400mf",
    "convnext_tiny",
]


def input_size(name: str) -> int:
    """The smallest input each family accepts, to keep CI time down."""
    if name.startswith(("vit", "swin", "maxvit")):
        return 224
    if name.startswith("inception"):
        return 75
    return 32 if name.startswith(("resnet", "mobilenet", "mnasnet", "regnet", "shufflenet")) else 64


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name).eval()
    s = input_size(name)
    return model, torch.randn(2, 3, s, s)


def check(model, x, **kw) -> None:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attributes = {n: dict(m.__dict__) for n, m in model.named_modules()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = chanprune.mask(model, x, **kw)
    assert masks
    with torch.no_grad():
        ref = model(x)
    copied = {}
    for method in ("baseline", "reorder"):  # one at a time: the zoo's largest are 2.5 GB each
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = chanprune.export(model, x, method=method)
        with torch.no_grad():
            assert outputs_match(ref, exported(x))
        assert chanprune.count_params(exported) < chanprune.count_params(model)
        copied[method] = sum(c.elements for c in exported.chanprune_copies)
        del exported
    assert copied["reorder"] <= copied["baseline"]  # reordering never copies more
    # no side effects: every module keeps every attribute it had, and gains none
    now = {n: dict(m.__dict__) for n, m in model.named_modules()}
    assert now.keys() == attributes.keys()
    for name, attrs in attributes.items():
        assert now[name].keys() == attrs.keys(), name
        assert all(now[name][k] is v for k, v in attrs.items()), name
    with torch.no_grad():  # back to the unmasked weights for the next run
        for k, v in model.state_dict().items():
            v.copy_(state[k])


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_torchvision_model_output_side(name):
    model, x = build(name)
    check(model, x, amount=0.3, side="output", constrained=False)
    check(model, x, amount=0.3, side="output", constrained=True)


@pytest.mark.slow
@pytest.mark.parametrize("heuristic", chanprune.HEURISTICS)
@pytest.mark.parametrize("name", DEEP)
def test_heuristics_and_input_side(name, heuristic):
    model, x = build(name)
    check(model, x, amount=0.3, heuristic=heuristic, side="input", constrained=False)
    check(model, x, amount=0.3, heuristic=heuristic, side="output", constrained=False)
    if heuristic == "l1":
        check(model, x, amount=0.3, side="input", constrained=True)
        check(model, x, amount=0.3, scope="global", side="output")
