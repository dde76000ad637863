"""Determinism: the same model and masks give byte-identical exported weights and equal plans,
in one process (fresh captures) and across processes with different hash seeds."""

import copy
import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import chanprune
from chanprune import fuzz


class Dense(nn.Module):
    """DenseNet-like: concatenated features read by several consumers with their own masks."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.l1 = nn.Sequential(nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 8, 1))
        self.l2 = nn.Sequential(nn.BatchNorm2d(20), nn.ReLU(), nn.Conv2d(20, 8, 3, padding=1))
        self.l3 = nn.Sequential(nn.BatchNorm2d(28), nn.ReLU(), nn.Conv2d(28, 8, 1))
        self.fc = nn.Linear(36, 5)

    def forward(self, x):
        x = self.stem(x)
        for layer in (self.l1, self.l2, self.l3):
            x = torch.cat([x, layer(x)], 1)
        return self.fc(x.mean((2, 3)))


def masked_dense() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(3)
    model, x = Dense().eval(), torch.randn(2, 3, 8, 8)
    chanprune.mask(model, x, amount=0.4, side="input", constrained=False)
    return model, x


def digest(model: nn.Module, x: torch.Tensor, method: str) -> str:
    """A hash of everything an export decides: weight bytes and names, graph code, plan."""
    exported = chanprune.export(model, x, method=method)
    h = hashlib.sha256()
    for name, t in exported.state_dict().items():
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    h.update(exported.code.encode())
    h.update(repr(chanprune.plan(model, x, method=method)).encode())
    return h.hexdigest()


def fuzz_model(seed: int) -> tuple[nn.Module, torch.Tensor]:
    case = fuzz.draw_case(fuzz.RandomDraw(seed), 10, 1)
    model, x = fuzz.build(case)
    fuzz.apply_maskset(model, x, case.masksets[0])
    return model, x


@pytest.mark.parametrize("method", ["reorder", "baseline"])
@pytest.mark.parametrize("which", ["dense", 11, 16])
def test_same_model_and_masks_give_identical_exports(which, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, x = masked_dense() if which == "dense" else fuzz_model(which)
        first = digest(model, x, method)
        assert digest(model, x, method) == first  # cached capture
        assert digest(copy.deepcopy(model), x, method) == first  # a fresh capture
        plan_a, plan_b = chanprune.plan(model, x, method), chanprune.plan(model, x, method)
    assert plan_a == plan_b


def test_layout_search_stops_on_a_work_budget_not_the_clock(monkeypatch):
    """On a segment too hard to solve exactly, the reorder export's search ends on a work budget:
    the plan (order and proven bound) is the same on a fast or a slow machine."""
    import itertools
    import random

    from chanprune.layout.solver import search, solve_layout
    from chanprune.layout.solver.problem import LayoutProblem

    rng = random.Random(7)
    channels = tuple(range(200))
    consumers = tuple(frozenset(rng.sample(channels, rng.randint(2, 120))) for _ in range(30))
    problem = LayoutProblem(channels, consumers, tuple(rng.uniform(0.1, 2) for _ in consumers))
    fast = solve_layout(problem, time_limit=60, max_work=60_000)
    assert fast.method == "heuristic"
    ticks = itertools.count()
    monkeypatch.setattr(search.time, "perf_counter", lambda: next(ticks) * 0.01)  # a slow clock
    assert solve_layout(problem, time_limit=60, max_work=60_000) == fast


def test_identical_across_processes_and_hash_seeds():
    script = Path(__file__).resolve()
    digests = set()
    for hash_seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, OMP_NUM_THREADS="1")
        out = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, x = masked_dense()
        digests.add(f"{digest(model, x, 'reorder')} {digest(model, x, 'baseline')}")
    assert len(digests) == 1, digests


if __name__ == "__main__":  # the subprocess of test_identical_across_processes_and_hash_seeds
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    m, inp = masked_dense()
    print(digest(m, inp, "reorder"), digest(m, inp, "baseline"))
