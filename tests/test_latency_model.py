"""The latency model: op traces, cached tables, channel costs and the measured refinement of a
latency target. Timings are replaced by deterministic fake timers: nothing here is timed."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import nn

import chanprune
from chanprune.analysis.propagate import analyze
from chanprune.capture.trace import capture
from chanprune.errors import InputError
from chanprune.latency.measure import Measured, measure_calls, runner
from chanprune.latency.model import LatencyModel, check_backend, graph_costs
from chanprune.latency.table import LatencyTable
from chanprune.latency.trace import op_trace
from chanprune.masking.targets import LATENCY_TOLERANCE, Target, Try, refine, resolve, verdict


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 32, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a(x))
        x = torch.relu(self.bn(self.b(x)))
        return self.fc(x.mean((2, 3)))


def bytes_timer(call) -> float:
    """A fake timer: a call costs its bytes (1 ns each), views 0."""
    return 0.0 if call.kind == "view" else (call.bytes_in + call.bytes_out) * 1e-9


X = torch.randn(1, 3, 8, 8)


def test_trace_sees_every_layer_and_its_shapes():
    calls = op_trace(Net(), X)
    convs = [c for c in calls if c.op.startswith("aten.conv")]
    assert len(convs) == 2
    assert convs[1].args[1].shape == (32, 16, 3, 3)  # the weight
    assert all(c.kind == "compute" for c in convs)
    assert any(c.op.startswith("aten.linear") and c.kind == "compute" for c in calls)


def test_prediction_sums_the_table_and_an_export_costs_less():
    torch.manual_seed(0)
    model = Net()
    lm = LatencyModel(cache_dir=None, timer=bytes_timer)
    full = lm.predict(model, X)
    want = sum(bytes_timer(c) for c in op_trace(model, X))
    assert full.seconds == pytest.approx(want)
    chanprune.mask(model, X, amount=0.5)
    pruned = lm.predict(chanprune.export(model, X), X)
    assert 0 < pruned.seconds < full.seconds


def test_table_measures_each_call_once_and_caches_on_disk(tmp_path):
    counted = itertools.count()

    def timer(call):
        next(counted)
        return 1e-3

    t = LatencyTable("cpu", 2, tmp_path, timer)
    calls = op_trace(Net(), X)
    for c in calls + calls:
        t.seconds(c)
    distinct = len(
        {c.key for c in calls if c.kind != "view"}
        | ({"v"} if any(c.kind == "view" for c in calls) else set())
    )
    assert next(counted) == distinct  # every distinct call timed once, repeats looked up
    t.save()
    again = LatencyTable("cpu", 2, tmp_path, lambda c: pytest.fail("re-measured a cached call"))
    assert all(again.seconds(c) == 1e-3 for c in calls)


def test_real_timer_gives_positive_finite_seconds():
    t = LatencyTable("cpu", 1, None)
    for c in op_trace(Net(), X)[:3]:
        s = t.seconds(c)
        assert 0 < s < 1 and math.isfinite(s)


def test_graph_costs_are_macs_per_channel():
    model = Net()
    an = analyze(capture(model, (X,)))
    costs = graph_costs(an)
    rows = {an.producers[i].weight: v for i, v in costs.row.items()}
    cols = {an.consumers[j].weight: v for j, v in costs.col.items()}
    # conv b: 32 rows, each 16*3*3 MACs at 8x8 positions; it reads 16 channels
    assert rows["b.weight"] == pytest.approx(16 * 9 * 64)
    assert cols["b.weight"] == pytest.approx(32 * 9 * 64)
    assert cols["fc.weight"] == pytest.approx(10)
    # the stream between a and b: relu's bytes per channel (in + out, fp32, 64 positions)
    assert costs.stream and all(v > 0 for v in costs.stream.values())
    assert costs.total > sum(rows.values())


def test_channel_costs_scale_to_seconds():
    model = Net()
    an = analyze(capture(model, (X,)))
    lm = LatencyModel(cache_dir=None, timer=bytes_timer)
    full = lm.predict(model, X)
    c = lm.channel_costs(an, full)
    g = graph_costs(an)
    assert c.unit == "s" and c.total == pytest.approx(full.seconds)
    # rows and columns are both compute: one exchange rate, so their proportions stay
    (k0, k1), j = list(g.row)[:2], next(iter(g.col))
    assert c.row[k0] / c.row[k1] == pytest.approx(g.row[k0] / g.row[k1])
    assert c.row[k0] / c.col[j] == pytest.approx(g.row[k0] / g.col[j])
    assert all(v > 0 for v in c.stream.values())


def test_unknown_backend_and_absent_gpu_are_refused():
    with pytest.raises(InputError, match="unknown backend 'tpu'"):
        check_backend("tpu")
    with pytest.raises(InputError, match="unknown backend"):
        resolve(None, None, None, 0.7, backend="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            LatencyModel("cuda", cache_dir=None)
        with pytest.raises(InputError, match="no CUDA GPU"):
            runner(Net(), (X,), {}, "cuda")


def test_resolve_latency_target():
    _amount, target = resolve(None, None, None, 0.7, backend="ort")
    assert target == Target("target_latency", 0.7, "ort")
    with pytest.raises(InputError, match="target_macs and target_latency"):
        resolve(None, 0.5, None, 0.7)
    with pytest.raises(InputError, match="in \\(0, 1\\]"):
        resolve(None, None, None, 1.5)


def test_measure_calls_pairs_rounds_with_a_fake_clock():
    ticks = itertools.count()
    state = {"t": 0.0}

    def clock() -> float:
        next(ticks)
        return state["t"]

    def slow() -> None:
        state["t"] += 2.0

    def fast() -> None:
        state["t"] += 1.0

    got = measure_calls(fast, slow, rounds=9, warmup=0, clock=clock)
    assert got.ratio == pytest.approx(0.5) and got.rounds == 9
    assert got.interval == (pytest.approx(0.5), pytest.approx(0.5))


def test_refine_corrects_a_biased_model():
    # the model predicts 0.8 x what is measured: aiming at 0.6 lands at 0.75 measured, and the
    # correction aims the prediction at 0.48 instead
    amounts = [i / 100 for i in range(100)]

    def measured(a: float) -> float:
        return 1 - 0.8 * a

    def search_for(goal: float):
        a = min(amounts, key=lambda a: abs(0.8 * measured(a) - goal))
        t = Try(a, 0.8 * measured(a))
        return t, t

    calls = []

    def measure_at(a: float) -> Measured:
        calls.append(a)
        return Measured(measured(a), None, 5)

    _found, _, got = refine(search_for, measure_at, 0.6)
    assert abs(got.ratio / 0.6 - 1) <= LATENCY_TOLERANCE
    assert len(calls) == 2  # one correction was enough


def test_latency_verdict_is_relative_and_names_the_backend():
    t = Target("target_latency", 0.5, "eager")
    assert verdict(Try(0.3, 0.52), Try(0.9, 0.2), t, "") is None  # 4% off: met
    fatal, text = verdict(Try(0.3, 0.6), Try(0.9, 0.2), t, "")
    assert not fatal and "measured on eager" in text and "0.600" in text


def test_mask_to_a_latency_target_with_a_biased_fake_backend(monkeypatch):
    """mask(target_latency=) end to end without timing: the latency model's calls cost their
    bytes, and the 'measurement' is that model's ratio times 1.15 (a biased model). The search
    must correct its aim, land the measured ratio within 5% and leave one exact mask applied."""
    from chanprune.masking import masks as M
    from chanprune.masking import targets as T

    fake = LatencyModel(cache_dir=None, timer=bytes_timer)
    monkeypatch.setitem(T._MODELS, "eager", fake)
    monkeypatch.setattr(M, "runner", lambda module, inputs, kwargs, backend: module)
    measured = []

    def fake_measure(pruned, base):
        ratio = 1.15 * fake.predict(pruned, X2).seconds / fake.predict(base, X2).seconds
        measured.append(ratio)
        return Measured(ratio, None, 1)

    monkeypatch.setattr(M, "measure_calls", fake_measure)
    torch.manual_seed(0)
    model = Residual()
    got = chanprune.mask(model, X2, target_latency=0.8)
    assert abs(got.ratio / 0.8 - 1) <= LATENCY_TOLERANCE
    assert got.ratio == measured[-1] or got.ratio in measured
    assert len(measured) >= 2  # the first aim, biased by 1.15, missed; one correction at least
    assert got.predicted < got.ratio  # what the model predicted for the export it chose
    assert [m for _, m in got.attempts] == measured  # every measurement, in order
    assert all(m == pytest.approx(1.15 * p) for p, m in got.attempts)
    chanprune.export(model, X2)  # exact (checks itself)


def test_a_latency_target_on_ort_is_predicted_and_measured_for_the_dense_export(monkeypatch):
    """ONNX Runtime runs the copy-free dense export faster than reorder, so a target on 'ort'
    predicts and measures dense exports and says so (``method``); other targets stay on
    reorder. No timing: a byte-cost latency model and a fake measurement."""
    from chanprune.masking import masks as M
    from chanprune.masking import targets as T

    fake = LatencyModel(cache_dir=None, timer=bytes_timer)
    monkeypatch.setitem(T._MODELS, "ort", fake)
    monkeypatch.setattr(M, "runner", lambda module, inputs, kwargs, backend: module)
    predicted, measured = [], []
    predict = fake.predict
    example = [X2]  # the inputs the fake measurement predicts at

    def spy(module, *args, **kwargs):
        predicted.append(getattr(module, "chanprune_method", None))  # None: the user's model
        return predict(module, *args, **kwargs)

    monkeypatch.setattr(fake, "predict", spy)

    def fake_measure(pruned, base):
        measured.append(pruned.chanprune_method)
        xs = example[0]
        return Measured(fake.predict(pruned, xs).seconds / fake.predict(base, xs).seconds, None, 1)

    monkeypatch.setattr(M, "measure_calls", fake_measure)
    torch.manual_seed(0)
    got = chanprune.mask(Residual(), X2, target_latency=0.8, backend="ort", constrained=False)
    assert got.method == "dense" and measured and set(measured) == {"dense"}
    # every masked try, not just the last (the first prediction is the unmasked reference)
    assert predicted[0] == "reorder" and set(predicted[1:]) == {"dense", None}
    # mixed masks aimed at the dense export take only what it removes: whole segment channels
    # and private units, so dense and reorder exports of them have the same MACs
    # (resnet18: its residual streams have several writers, where a lone row would count)
    import torchvision

    torch.manual_seed(0)
    model, x = torchvision.models.resnet18(num_classes=10).eval(), torch.randn(1, 3, 32, 32)
    example[0] = x
    macs = chanprune.count_macs(model, x)
    got = chanprune.mask(model, x, target_latency=0.6, backend="ort", constrained="mixed")
    assert got.method == "dense" and got
    dense, reorder = (chanprune.export(model, x, method=m) for m in ("dense", "reorder"))
    assert chanprune.count_macs(dense, x) == chanprune.count_macs(reorder, x) < macs
    assert Target("target_latency", 0.8, "eager").method == "reorder"
    assert Target("target_macs", 0.8, "ort").method == "reorder"
    assert chanprune.mask(Residual(), X2, target_macs=0.8).method == "reorder"


def test_the_cli_exports_with_the_method_the_target_was_measured_with():
    import argparse

    from chanprune.cli.prune import export_method
    from chanprune.masking.targets import TargetMasks, Try

    on_ort = TargetMasks({}, Target("target_latency", 0.7, "ort"), Try(0.3, 0.7))
    on_eager = TargetMasks({}, Target("target_latency", 0.7, "eager"), Try(0.3, 0.7))
    assert export_method(argparse.Namespace(method=None), on_ort) == "dense"
    assert export_method(argparse.Namespace(method=None), on_eager) == "reorder"
    assert export_method(argparse.Namespace(method=None), {"w": [0]}) == "reorder"
    assert export_method(argparse.Namespace(method="baseline"), on_ort) == "baseline"  # asked


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.a = nn.Conv2d(32, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Conv2d(32, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))
        s = s + torch.relu(self.a(s))
        return self.head(torch.relu(s + self.b(s)))


X2 = torch.randn(1, 3, 16, 16)


def test_a_table_timed_under_load_is_dropped_and_a_loaded_machine_warned(tmp_path):
    """The probe conv runs in about a millisecond: a cached table claiming it took 1000 s was
    timed on a busy machine and is dropped; one claiming 1 ns finds this machine 'slower'."""
    from chanprune.latency.table import PROBE_KEY, table_name

    path = tmp_path / table_name("cpu", 1)
    path.write_text(json.dumps({PROBE_KEY: 1e3, "some call": 5.0}))
    t = LatencyTable("cpu", 1, tmp_path)
    assert "some call" not in t.entries and t.entries[PROBE_KEY] < 1
    t.save()
    assert "some call" not in json.loads(path.read_text())
    path.write_text(json.dumps({PROBE_KEY: 1e-9, "some call": 5.0}))
    with pytest.warns(UserWarning, match="slower than when its latency table"):
        t = LatencyTable("cpu", 1, tmp_path)
    assert t.entries["some call"] == 5.0


def test_a_missed_mixed_target_does_not_suggest_global_scope():
    t = Target("target_macs", 0.5)
    _, plain = verdict(Try(0.3, 0.6), Try(0.9, 0.2), t, "")
    _, mixed = verdict(Try(0.3, 0.6), Try(0.9, 0.2), t, "", mixed=True)
    assert "scope='global'" in plain and "scope" not in mixed and "closest step" in mixed


def test_refine_removes_a_constant_offset_with_a_secant():
    # the model misses a fixed cost: measured = 0.3 + 0.5 x predicted (mobilenet_v2's kind of
    # bias). Scaling alone creeps towards the target; the secant through two measurements lands.
    amounts = [i / 1000 for i in range(1000)]

    def predicted(a: float) -> float:
        return 1 - a

    def search_for(goal: float):
        a = min(amounts, key=lambda a: abs(predicted(a) - goal))
        t = Try(a, predicted(a))
        return t, t

    calls = []

    def measure_at(a: float) -> Measured:
        calls.append(a)
        return Measured(0.3 + 0.5 * predicted(a), None, 5)

    _found, _, got = refine(search_for, measure_at, 0.45)
    assert abs(got.ratio / 0.45 - 1) <= LATENCY_TOLERANCE
    assert len(calls) == 3  # the first aim, one scaling, then the secant
