"""chanprune.plan: copies per segment, reorder never worse than baseline, proofs honoured."""

import warnings

import pytest
import torch

import chanprune

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def masked():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.mobilenet_v2().eval()
        x = torch.randn(1, 3, 32, 32)
        chanprune.mask(model, x, amount=0.3, side="input")
    return model, x


def test_reorder_copies_fewer_bytes_and_matches_the_proven_minimum(masked):
    model, x = masked
    base = chanprune.plan(model, x, method="baseline")
    reorder = chanprune.plan(model, x, method="reorder")
    assert 0 < reorder.copied_bytes < base.copied_bytes
    for seg in reorder.segments:
        if seg.optimal:  # the solver proved its cost minimal: the export copies exactly that
            assert seg.copied_bytes == pytest.approx(seg.lower_bound_bytes)
    assert "method=reorder" in reorder.summary()


def test_plan_matches_the_export(masked):
    model, x = masked
    p = chanprune.plan(model, x, method="reorder")
    exported = chanprune.export(model, x, method="reorder")
    assert len(exported.chanprune_copies) == p.gathers


def test_ideal_keeps_the_sizes_and_drops_the_gathers(masked):
    model, x = masked
    exported = chanprune.export(model, x, method="baseline")
    ideal = chanprune.ideal(exported)
    assert exported.chanprune_copies  # the baseline gathers ...
    ops = [str(n.target) for n in ideal.graph.nodes]
    assert not any("index_select" in op or "gather" in op for op in ops)  # ... the ideal does not
    assert chanprune.count_params(ideal) == chanprune.count_params(exported)
    assert ideal(torch.randn(3, 3, 32, 32)).shape == (3, 1000)


def _channel_copies(module: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """The channel copies ``module`` makes: gathers and pads, and the copies a convolution makes
    of a strided input (seen by the profiler, which sees ops that kernels call, unlike a
    dispatch mode)."""
    from torch.profiler import profile

    with torch.inference_mode(), profile() as prof:
        module(x)
    out = []
    for e in prof.events():
        parents, p = [], e.cpu_parent
        while p is not None:
            parents.append(p.name)
            p = p.cpu_parent
        if e.name in ("aten::index_select", "aten::gather", "aten::constant_pad_nd") or (
            e.name == "aten::copy_" and "aten::convolution" in parents
        ):
            out.append(e.name)
    return out


def test_ideal_copies_nothing_at_any_batch_size(masked):
    """Past batch 1 a channel slice is strided and a convolution copies it before it runs, so
    the reorder export still copies there; the ideal reads prefix views and copies nothing."""
    model, x = masked
    exported = chanprune.export(model, x, method="reorder")
    ideal = chanprune.ideal(exported)
    xb = torch.randn(3, 3, 32, 32)
    assert _channel_copies(exported, xb)
    assert _channel_copies(ideal, xb) == []
    assert ideal(xb).shape == exported(xb).shape
