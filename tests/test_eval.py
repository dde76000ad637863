"""Top-1 evaluation (one process and DDP over gloo), training / fine-tuning, ``chanprune eval``."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from fake_idx import write_fake_fashion_mnist
from torch import nn
from torch.utils.data import TensorDataset

import chanprune
from chanprune.evaluation.accuracy import evaluate
from chanprune.evaluation.data import FashionMNIST
from chanprune.evaluation.training import train


def test_top1_counts_exactly():
    x = torch.eye(10)[torch.tensor([0, 1, 2, 3, 4, 5, 6])]  # identity model predicts 0..6
    y = torch.tensor([0, 1, 2, 9, 9, 5, 9])
    ev = evaluate(nn.Identity(), TensorDataset(x, y), batch_size=3, keep_predictions=True)
    assert (ev.correct, ev.total) == (4, 7) and ev.top1 == pytest.approx(400 / 7)
    assert ev.predictions.tolist() == [0, 1, 2, 3, 4, 5, 6]


def small_cnn(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, classes),
    ).eval()


def _ddp_worker(rank: int, world: int, root: str, store: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        ds = FashionMNIST(root, "test")
        ev = evaluate(small_cnn(), ds, batch_size=8, keep_predictions=True)
        shard = list(torch.utils.data.DistributedSampler(ds, world, rank, shuffle=False))
        out = {
            "correct": ev.correct,
            "total": ev.total,
            "preds": ev.predictions.tolist(),
            "indices": shard[: len(ev.predictions)],
        }
        with open(f"{root}/rank{rank}.json", "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def test_ddp_top1_equals_single_process(tmp_path):
    root = write_fake_fashion_mnist(tmp_path / "fm", n_test=41)  # odd: the sampler pads a repeat
    ds = FashionMNIST(root, "test")
    single = evaluate(small_cnn(), ds, keep_predictions=True)
    mp.spawn(_ddp_worker, args=(2, str(root), str(tmp_path / "store")), nprocs=2, join=True)
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:  # every rank holds the whole data set's counts
        assert (r["correct"], r["total"]) == (single.correct, single.total) == (r["correct"], 41)
    assert sorted(i for r in ranks for i in r["indices"]) == list(range(41))  # no repeat counted
    for r in ranks:
        assert r["preds"] == single.predictions[r["indices"]].tolist()
    assert 0 < single.correct < 41  # a non-trivial count, so equality means something


def test_finetuning_an_export_trains_it_and_leaves_the_model(tmp_path):
    root = write_fake_fashion_mnist(tmp_path / "fm", n_train=96)
    data = FashionMNIST(root, "train")
    model = small_cnn()
    x = torch.stack([data[i][0] for i in range(4)])
    chanprune.mask(model, x, amount=0.5, heuristic="l1", side="input")
    before = copy.deepcopy(model.state_dict())
    pruned = chanprune.export(model, x)
    assert chanprune.count_params(pruned) < chanprune.count_params(model)
    w0 = {k: v.clone() for k, v in pruned.state_dict().items()}
    losses = train(pruned, data, epochs=4, lr=1e-2, batch_size=32, progress=False)
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert any(not torch.equal(v, w0[k]) for k, v in pruned.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(chanprune.InputError, match="smaller than batch_size"):
        train(pruned, torch.utils.data.Subset(data, range(3)), 1, batch_size=8)


EXE = shutil.which("chanprune") or f"{sys.executable} -m chanprune.cli"


def _top1(out: str, label: str) -> float:
    return float(re.search(rf"^{label}\s+top-1\s+([\d.]+)", out, re.M).group(1))


def _eval_resnet18(root) -> list[str]:
    """``eval resnet18`` on the fake Fashion-MNIST at ``root``, 10 classes, batches of 16."""
    return ["eval", "resnet18", "--num-classes", "10", "--data", str(root), "--batch-size", "16"]


def test_eval_command_prunes_recalibrates_and_finetunes(tmp_path):
    pytest.importorskip("torchvision")
    root = write_fake_fashion_mnist(tmp_path / "fm", n_train=64, n_test=41)
    r = subprocess.run(
        [
            *EXE.split(),
            *_eval_resnet18(root),
            *("--amount", "0.3", "--calibrate", "2", "--finetune-epochs", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "41 fashion-mnist images, 1 process(es)" in r.stdout
    assert "(before BatchNorm recalibration on 32 images)" in r.stdout  # 2 batches of 16
    assert "finetuned top-1" in r.stdout and "training mode" in r.stdout
    assert r.stdout.count("predictions identical") == 2  # the export, and the fine-tuned one
    params = [int(p.replace(",", "")) for p in re.findall(r"params\s+([\d,]+)", r.stdout)]
    assert params[1] < params[0] and params[2] == params[1]  # fine-tuning kept the pruning


def test_eval_command_under_torchrun_matches_one_process(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    root = write_fake_fashion_mnist(tmp_path / "fm", n_test=41)
    t = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "chanprune.cli",
            *_eval_resnet18(root),
            "--seed",
            "3",
            *("--amount", "0.3", "--finetune-epochs", "1", "--finetune-limit", "32"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert t.returncode == 0, t.stderr
    assert "41 fashion-mnist images, 2 process(es)" in t.stdout
    assert "batch 16, 2 process(es), training mode" in t.stdout  # data-parallel fine-tuning
    assert t.stdout.count("predictions identical") == 2
    torch.manual_seed(3)  # the command's --seed: the same random init in this process
    model = torchvision.models.get_model("resnet18", weights=None, num_classes=10)
    single = evaluate(model, FashionMNIST(root, "test"))
    assert _top1(t.stdout, "unpruned") == pytest.approx(single.top1, abs=0.005)


def test_eval_command_missing_data_is_a_clear_error(tmp_path):
    r = subprocess.run(
        [*EXE.split(), "eval", "resnet18", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2 and "dataset-fashion-mnist" in r.stderr
