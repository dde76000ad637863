"""The frontier study's training stage: a run stopped after an epoch and resumed from its
checkpoint takes the steps of an uninterrupted one (weights, history, random state), a finished
checkpoint is loaded and not trained again, shifts and flips are what they say, and the stage
writes its report. Nothing is timed: the report's seconds are only checked to be there."""

from __future__ import annotations

import json

import pytest
import torch
from fake_idx import write_fake_fashion_mnist
from torch import nn
from torch.utils.data import TensorDataset

import chanprune
from helpers import load_benchmark


@pytest.fixture(scope="module")
def frontier():
    return load_benchmark("frontier")


def tiny(seed: int) -> nn.Module:
    """BatchNorm (running statistics) and dropout (random draws): both must survive a resume."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    )


def tiny_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    return TensorDataset(x, y)


def fit(frontier, model, path, **kw):
    train_set = frontier.Augmented(tiny_data(64, 1), shift=1, fill=-1.0)
    test_set = tiny_data(20, 2)
    return frontier.fit(
        model, train_set, test_set, 2, path, lr=1e-2, batch_size=16, progress=False, **kw
    )


def test_one_epoch_then_resume_then_one_equals_two_epochs_straight(frontier, tmp_path):
    straight = tiny(0)
    ck_straight = fit(frontier, straight, tmp_path / "a.pt")
    first = tiny(0)
    ck_first = fit(frontier, first, tmp_path / "b.pt", stop_after=1)
    assert ck_first["train"]["epoch"] == 1 and len(ck_first["history"]) == 1
    after_one = {k: v.clone() for k, v in first.state_dict().items()}
    resumed = tiny(7)  # other initial weights: the resumed run must take the checkpoint's
    ck = fit(frontier, resumed, tmp_path / "b.pt", run={"command": "again"})
    want = straight.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed.state_dict().items())
    assert any(not torch.equal(v, want[k]) for k, v in after_one.items())  # epoch 2 trained
    assert [h["epoch"] for h in ck["history"]] == [1, 2]
    for key in ("loss", "top1"):
        assert [h[key] for h in ck["history"]] == [h[key] for h in ck_straight["history"]]
    assert [r["from_epoch"] for r in ck["runs"]] == [0, 1] and ck["runs"][1]["command"] == "again"
    saved = frontier.load_checkpoint(tmp_path / "b.pt")  # weights_only load
    assert saved["train"]["epoch"] == 2
    assert all(torch.equal(v, want[k]) for k, v in saved["model"].items())


def test_a_finished_checkpoint_is_loaded_not_trained_and_a_changed_config_refused(
    frontier, tmp_path
):
    done = tiny(0)
    fit(frontier, done, tmp_path / "a.pt")
    again = tiny(3)
    ck = fit(frontier, again, tmp_path / "a.pt")
    assert len(ck["runs"]) == 1 and len(ck["history"]) == 2
    want = done.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in again.state_dict().items())
    with pytest.raises(chanprune.InputError, match="delete it or pass another --cache"):
        frontier.fit(tiny(0), tiny_data(64, 1), tiny_data(20, 2), 3, tmp_path / "a.pt")


def test_augmented_images_are_shifted_or_flipped_copies_filled_with_the_background(frontier):
    img = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    ds = frontier.Augmented(TensorDataset(img[None], torch.tensor([3])), shift=1, fill=-9.0)
    padded = torch.nn.functional.pad(img, (1, 1, 1, 1), value=-9.0)
    allowed = {}
    for flip in (False, True):
        src = torch.nn.functional.pad(img.flip(-1) if flip else img, (1, 1, 1, 1), value=-9.0)
        for dy in range(3):
            for dx in range(3):
                allowed[(flip, dy, dx)] = src[:, dy : dy + 4, dx : dx + 5]
    assert padded.shape == (2, 6, 7)
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        x, y = ds[0]
        assert x.shape == img.shape and int(y) == 3
        hits = [k for k, a in allowed.items() if torch.equal(a, x)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) == 18  # every shift, flipped and not
    with pytest.raises(chanprune.InputError, match="shift"):
        frontier.Augmented(ds, shift=-1)


def test_train_stage_writes_the_report_and_safetensors_weights(frontier, tmp_path):
    root = write_fake_fashion_mnist(tmp_path / "fm", n_train=256, n_test=41)
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["--models", "resnet18", "--epochs", "1", "--data", str(root)]
    argv += ["--cache", str(cache), "--out", str(out)]
    threads = torch.get_num_threads()
    try:
        assert frontier.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    (rec,) = json.loads((out / "frontier_base.json").read_text())
    assert rec["model"] == "resnet18" and rec["epochs"] == rec["epochs_done"] == 1
    assert len(rec["top1"]) == len(rec["seconds"]) == 1 and 0 <= rec["top1"][0] <= 100
    assert rec["runs"][0]["command"] == "python benchmarks/frontier.py " + " ".join(argv)
    assert rec["runs"][0]["machine"]["threads"] == 1
    md = (out / "frontier_base.md").read_text()
    assert "wall time on a shared machine" in md and "| resnet18 | 1 / 1 |" in md
    model = frontier.base_model("resnet18", cache, 32, epochs=1)
    ck = frontier.load_checkpoint(cache / f"{frontier.stem('resnet18', 32, 1)}.pt")
    assert all(torch.equal(v, ck["model"][k]) for k, v in model.state_dict().items())
    with pytest.raises(chanprune.InputError, match="--stage train --models mobilenet_v2"):
        frontier.base_model("mobilenet_v2", cache, 32)


def test_train_refuses_a_resume_state_it_did_not_hand_out(frontier):
    from chanprune.evaluation.training import train

    model = tiny(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    states = []
    train(
        model,
        tiny_data(64, 1),
        1,
        batch_size=16,
        progress=False,
        on_epoch=lambda e, loss, s: states.append(s),
    )
    assert [s["epoch"] for s in states] == [1]
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(chanprune.InputError, match=r"resume .*missing \['rng'\]"):
        state = {k: v for k, v in states[0].items() if k != "rng"}
        train(tiny(0), tiny_data(64, 1), 1, batch_size=16, progress=False, resume=state)
    with pytest.raises(chanprune.InputError, match=r"at an epoch in 0\.\.1"):
        train(
            tiny(0),
            tiny_data(64, 1),
            1,
            batch_size=16,
            progress=False,
            resume={**states[0], "epoch": 2},
        )
