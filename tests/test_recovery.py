"""Recovery: BatchNorm recalibration, fine-tuning the masked model in training semantics, and
data-parallel fine-tuning over 2 gloo processes."""

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

import chanprune
from chanprune.evaluation.recovery import finetune, held_zeros, sample_batches
from chanprune.evaluation.training import train


def net(dropout: float = 0.0, bn: bool = True) -> nn.Module:
    torch.manual_seed(0)
    norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        norm(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        norm(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(8, 10),
    ).eval()


def data(n: int = 64, seed: int = 1) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=gen) * 2 + 0.5
    return TensorDataset(x, torch.randint(0, 10, (n,), generator=gen))


def batches(k: int = 3, size: int = 8) -> list[torch.Tensor]:
    return [data(k * size, seed=2).tensors[0][i * size : (i + 1) * size] for i in range(k)]


def stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "tracked" in k}


# recalibration --------------------------------------------------------------------------------
def test_recalibration_averages_each_batch_statistics_and_restores_modes_and_momentum():
    model = net(dropout=0.5).train()
    model[4].eval()  # a frozen BatchNorm: its flag must survive
    model[1].momentum = 0.3
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append((i[0].detach(), m.training)))
    names = chanprune.recalibrate(model, batches())
    assert names == ["1", "4"]
    means = torch.stack([x.mean((0, 2, 3)) for x, _ in seen])
    variances = torch.stack([x.transpose(0, 1).flatten(1).var(1) for x, _ in seen])
    assert all(training for _, training in seen)  # normalised with batch statistics
    # momentum=None: every batch weighs the same (momentum 0.3 would weigh the last most)
    torch.testing.assert_close(model[1].running_mean, means.mean(0))
    torch.testing.assert_close(model[1].running_var, variances.mean(0))
    assert int(model[1].num_batches_tracked) == 3
    assert model[1].momentum == 0.3 and model[4].momentum == 0.1
    assert [m.training for m in model] == [True] * 4 + [False] + [True] * 5
    assert all(p.grad is None for p in model.parameters())


def test_recalibration_runs_dropout_in_eval_mode():
    model = net(dropout=0.9)
    modes = []
    model[8].register_forward_hook(lambda m, i, o: modes.append(m.training))
    chanprune.recalibrate(model, batches())
    assert modes == [False] * 3


def test_mask_recalibrate_export_is_exact_and_pruned_channels_stay_zero():
    model = net()
    x = batches(1)[0]
    masks = chanprune.mask(model, x, amount=0.5, side="output")
    pruned = masks["0.weight"]
    assert pruned and model[1].weight[pruned].eq(0).all()  # the mask zeroed the BN after it
    chanprune.recalibrate(model, batches())
    bn = model[1]
    # the pruned channels entered the BN as zeros: mean 0, variance 0 ...
    assert bn.running_mean[pruned].eq(0).all() and bn.running_var[pruned].eq(0).all()
    live = [c for c in range(8) if c not in pruned]
    assert bn.running_mean[live].ne(0).all()  # ... the live ones got real statistics
    # ... and leave it as zeros: (0 - 0) / sqrt(0 + eps) * 0 + 0
    out = model[:2](torch.randn(4, 3, 8, 8))
    assert out[:, pruned].eq(0).all() and out[:, live].ne(0).any()
    exported = chanprune.export(model, x)
    assert chanprune.count_params(exported) < chanprune.count_params(model)
    probe = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(exported(probe), model(probe), rtol=1e-5, atol=1e-5)


def test_recalibration_without_batches_or_with_labelled_batches_is_refused_and_undone():
    model = net()
    model[1].running_mean.fill_(0.25)
    before = stats(model)
    with pytest.raises(chanprune.InputError, match="no batches"):
        chanprune.recalibrate(model, iter([]))
    pairs = [(x, torch.zeros(len(x), dtype=torch.long)) for x in batches()]
    with pytest.raises(chanprune.InputError, match=r"failed on batch 0.*\(x for x, _ in loader\)"):
        chanprune.recalibrate(model, pairs)
    assert all(torch.equal(v, before[k]) for k, v in stats(model).items())
    assert model[1].momentum == 0.1 and not any(m.training for m in model.modules())


def test_recalibrating_a_model_without_batchnorm_warns_and_changes_nothing():
    model = net(bn=False)
    with pytest.warns(UserWarning, match="no BatchNorm layer with running statistics"):
        assert chanprune.recalibrate(model, batches()) == []


def test_calibration_batches_are_a_seeded_sample_without_repeats():
    ds = TensorDataset(torch.arange(20.0)[:, None], torch.zeros(20))
    got = torch.cat(list(sample_batches(ds, 3, 4, seed=5))).flatten().tolist()
    assert len(got) == 12 == len(set(got)) and got != sorted(got)
    assert got == torch.cat(list(sample_batches(ds, 3, 4, seed=5))).flatten().tolist()
    assert len(list(sample_batches(ds, 9, 4))) == 5  # the whole data set, no more
    with pytest.raises(chanprune.InputError, match="count and batch_size >= 1"):
        next(sample_batches(ds, 0, 4))


# fine-tuning ----------------------------------------------------------------------------------
def test_held_zeros_are_the_masks_entries_not_every_zero():
    model = net()  # a fresh BatchNorm's biases are all zero: only the pruned ones are held
    x = batches(1)[0]
    masks = chanprune.mask(model, x, amount=0.5, side="output")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    held = held_zeros(model, x, masks, side="output")
    pruned = masks["0.weight"]
    rows = torch.zeros(8, dtype=torch.bool)
    rows[pruned] = True
    for name in ("0.bias", "1.weight", "1.bias"):
        assert torch.equal(held[name], rows), name
    assert torch.equal(held["0.weight"], rows[:, None, None, None].expand(8, 3, 3, 3))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_finetuning_trains_the_masked_model_in_training_mode_and_keeps_its_pruning(tmp_path):
    pytest.importorskip("safetensors")
    model = net(dropout=0.5)
    x = batches(1)[0]
    masks = chanprune.mask(model, x, amount=0.5, side="output")
    params_before = chanprune.count_params(chanprune.export(model, x))
    bn_before, w_before = stats(model), model[3].weight.clone()
    modes = []
    model[8].register_forward_hook(lambda m, i, o: modes.append(m.training))
    losses = finetune(model, data(), 2, x, masks, lr=1e-2, batch_size=16, progress=False)
    assert len(losses) == 2 and modes and all(modes)  # dropout was active
    assert not any(m.training for m in model.modules())  # and the model is back in eval mode
    changed = [k for k, v in stats(model).items() if not torch.equal(v, bn_before[k])]
    assert "1.running_mean" in changed and "4.running_var" in changed
    assert not torch.equal(model[3].weight, w_before)
    pruned = masks["0.weight"]
    for p in (model[0].weight, model[0].bias, model[1].weight, model[1].bias):
        assert p[pruned].eq(0).all()
    exported = chanprune.export(model, x)  # checks itself against the masked model
    assert chanprune.count_params(exported) == params_before  # pruned channels stay pruned
    probe = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(exported(probe), model(probe), rtol=1e-5, atol=1e-5)
    spec, _ = chanprune.save_pruned(exported, model, x, tmp_path / "tuned.json")
    loaded = chanprune.load_pruned(net(dropout=0.5), spec, x)
    with torch.no_grad():
        torch.testing.assert_close(loaded(probe), exported(probe), rtol=0, atol=0)


def test_finetuning_holds_input_side_masks_too():
    model = net()
    x = batches(1)[0]
    masks = chanprune.mask(model, x, amount=0.5, side="input")
    cols = masks["3.weight"]
    finetune(model, data(), 1, x, masks, side="input", lr=1e-2, batch_size=16, progress=False)
    assert model[3].weight[:, cols].eq(0).all() and model[3].weight.ne(0).any()


def test_training_refuses_a_process_group_it_does_not_have_and_unknown_held_entries():
    with pytest.raises(chanprune.InputError, match="initialised process group"):
        train(net(), data(), 1, batch_size=16, distributed=True, progress=False)
    keep = {"0.weight": torch.ones(8, 3, 3, 3, dtype=torch.bool), "9.wieght": torch.ones(1)}
    model = net()
    with pytest.raises(chanprune.InputError, match=r"keep_zero names '9.wieght' with shape"):
        train(model, data(), 1, batch_size=16, keep_zero=keep, progress=False)
    assert model[0].weight.ne(0).all()  # refused before any change


# data-parallel fine-tuning --------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, out: str, store: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        plain = net(bn=False)
        losses = train(plain, data(), 2, lr=1e-2, batch_size=16, progress=False)
        bn = net()
        if rank == 1:  # DDP starts every process from rank 0's weights
            nn.init.normal_(bn[3].weight)
        keep = {"3.weight": torch.zeros(8, 8, 3, 3, dtype=torch.bool)}
        keep["3.weight"][:, 2] = True
        train(bn, data(), 2, lr=1e-2, batch_size=16, progress=False, keep_zero=keep)
        try:
            train(net(), data(), 1, batch_size=15, progress=False)
            refused = ""
        except chanprune.InputError as e:
            refused = str(e)
        torch.save(
            {"plain": plain.state_dict(), "bn": bn.state_dict(), "losses": losses, "err": refused},
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_processes_take_the_steps_of_one_on_the_same_global_batches(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path), str(tmp_path / "store")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = net(bn=False)
    losses = train(single, data(), 2, lr=1e-2, batch_size=16, progress=False)
    for r in ranks:  # no BatchNorm, no dropout: the same sums, split over two processes
        for k, v in single.state_dict().items():
            torch.testing.assert_close(r["plain"][k], v, rtol=1e-4, atol=1e-5)
        assert r["losses"] == pytest.approx(losses, rel=1e-4)
        assert "must be divisible by the 2 processes" in r["err"]
    start = net(bn=False).state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in ranks[0]["plain"].items())  # it trained
    a, b = ranks[0]["bn"], ranks[1]["bn"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same weights and running statistics
    assert a["3.weight"][:, 2].eq(0).all() and a["3.weight"].ne(0).any()
    assert not torch.equal(a["1.running_mean"], net().state_dict()["1.running_mean"])
