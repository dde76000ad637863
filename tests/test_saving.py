"""Saving and loading: spec + safetensors and .pt2 round trips, and no unpickling, ever."""

import io
import json
import pickle
import warnings
import zipfile

import pytest
import torch
from torch import nn

import chanprune
from chanprune.deploy.saving import load_program, load_pruned, read_spec, save_program, save_pruned
from helpers import outputs_match


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.c3 = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        y = self.c1(x)
        y = torch.relu(y + self.c2(y))
        return self.fc(self.c3(y).mean((2, 3)))


def pruned_net(side="input", method="reorder"):
    model = Net().eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    chanprune.mask(model, x, amount=0.5, side=side)
    return model, chanprune.export(model, x, method=method), x


@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize("method", ["reorder", "baseline"])
def test_spec_round_trip_rebuilds_the_same_pruned_model(tmp_path, side, method):
    model, pruned, x = pruned_net(side, method)
    spec_path, weights = save_pruned(pruned, model, x, tmp_path / "net.json")
    assert weights == tmp_path / "net.safetensors" and weights.is_file()
    loaded = load_pruned(Net(), spec_path)
    state, got = pruned.state_dict(), loaded.state_dict()
    assert state.keys() == got.keys()
    for k in state:
        assert torch.equal(state[k], got[k]), k
    for n in (1, 5):
        xb = torch.randn(n, 3, 8, 8)
        with torch.no_grad():
            assert outputs_match(model(xb), loaded(xb))


class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.gc = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=2), nn.BatchNorm2d(32))
        self.out = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        return self.out(torch.relu(self.gc(self.a(x))))


def masked_grouped_net():
    """13 of 16 rows kept in both groups of ``gc``: 13 a group at quantum 1, 16 at 8."""
    model = GroupedNet().eval()
    x = torch.randn(2, 3, 8, 8)
    chanprune.apply_masks(model, x, {"gc.0.weight": [0, 1, 2, 16, 17, 18]})
    return model, x


@pytest.mark.parametrize("quantum, rows", [(1, 26), (8, 32)])
def test_spec_records_the_group_quantum(tmp_path, quantum, rows):
    model, x = masked_grouped_net()
    pruned = chanprune.export(model, x, group_quantum=quantum)
    assert pruned.get_parameter("gc.0.weight").shape[0] == rows
    save_pruned(pruned, model, x, tmp_path / "g.json")
    assert read_spec(tmp_path / "g.json")["group_quantum"] == quantum
    loaded = load_pruned(GroupedNet(), tmp_path / "g.json")
    assert loaded.chanprune_group_quantum == quantum
    state, got = pruned.state_dict(), loaded.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in got.items()}
    with torch.no_grad():
        assert outputs_match(pruned(x), loaded(x))


@pytest.mark.parametrize("quantum", [1, 8])
def test_grouped_spec_round_trip_keeps_fine_tuned_fillers(tmp_path, quantum):
    """Uneven groups (11 and 13 kept rows): group 0 gets filler rows, and every group reads its
    own inputs. Fine-tuning makes the fillers non-zero; the spec must still reproduce it."""
    model, x = masked_grouped_net()
    chanprune.apply_masks(model, x, {"gc.0.weight": [3, 4]})
    pruned = chanprune.export(model, x, group_quantum=quantum)
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    pruned(x).square().mean().backward()
    opt.step()
    save_pruned(pruned, model, x, tmp_path / "g.json")
    keep = read_spec(tmp_path / "g.json")["tensors"]["gc.0.weight"]["keep"]
    assert len(keep[0]) == {1: 26, 8: 32}[quantum] and len(keep[1]["groups"]) == 2
    loaded = load_pruned(GroupedNet(), tmp_path / "g.json")
    with torch.no_grad():
        assert outputs_match(pruned(x), loaded(x))
        assert not outputs_match(model(x), loaded(x))  # really the tuned weights


def test_depthwise_fillers_round_trip_after_fine_tuning(tmp_path):
    """29 kept channels, 3 depthwise fillers (quantum 8). Fine-tuning makes the fillers' BN
    scales non-zero, so they carry values; the spec lists them as original channels and the
    rebuilt model reproduces the tuned one."""
    from test_rules import InvertedResidual, randomise_bn

    model = randomise_bn(InvertedResidual()).eval()
    x = torch.randn(2, 3, 8, 8)
    chanprune.apply_masks(model, x, {"expand.0.weight": [1, 2, 3]})
    pruned = chanprune.export(model, x)
    assert pruned.get_parameter("dw.0.weight").shape[0] == 32
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    pruned(x).square().mean().backward()
    opt.step()
    save_pruned(pruned, model, x, tmp_path / "d.json")
    keep = read_spec(tmp_path / "d.json")["tensors"]["dw.0.weight"]["keep"]
    assert keep[0] is None  # all 32 channels: 29 kept, 3 fillers
    loaded = load_pruned(InvertedResidual(), tmp_path / "d.json")
    with torch.no_grad():
        assert outputs_match(pruned(x), loaded(x))
        assert not outputs_match(model(x), loaded(x))  # really the tuned weights


def test_malformed_grouped_entry_names_the_tensor(tmp_path):
    model, x = masked_grouped_net()
    save_pruned(chanprune.export(model, x), model, x, tmp_path / "g.json")
    doc = json.loads((tmp_path / "g.json").read_text())
    doc["tensors"]["gc.0.weight"]["keep"][1] = {"groups": [[0, 1]] * 3}  # 3 blocks of 32 rows
    (tmp_path / "g.json").write_text(json.dumps(doc))
    with pytest.raises(chanprune.InputError, match=r"gc\.0\.weight: dim 1 is a malformed"):
        load_pruned(GroupedNet(), tmp_path / "g.json")


def test_spec_without_a_group_quantum_loads_with_none(tmp_path):
    """Specs written before the field existed: quantum 1 (the fewest parameters), still exact,
    whatever quantum they were saved with."""
    model, x = masked_grouped_net()
    pruned = chanprune.export(model, x)  # quantum 8: 16 a group
    save_pruned(pruned, model, x, tmp_path / "g.json")
    doc = json.loads((tmp_path / "g.json").read_text())
    del doc["group_quantum"]
    (tmp_path / "g.json").write_text(json.dumps(doc))
    loaded = load_pruned(GroupedNet(), tmp_path / "g.json")
    assert loaded.get_parameter("gc.0.weight").shape[0] == 26
    with torch.no_grad():
        assert outputs_match(pruned(x), loaded(x))
    doc["group_quantum"] = 0
    (tmp_path / "g.json").write_text(json.dumps(doc))
    with pytest.raises(chanprune.InputError, match=r"g\.json: group_quantum must be a positive"):
        load_pruned(GroupedNet(), tmp_path / "g.json")


class SharedBlock(nn.Module):
    def __init__(self, pe):
        super().__init__()
        self.pe = pe
        self.fc = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.fc(torch.relu(x + self.pe(x)))


class SharedPE(nn.Module):
    """One position-encoding conv shared by two blocks (timm's CoaT): its tensors have two
    names, and the capture may use the alias ``named_parameters()`` leaves out."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        pe = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.blocks = nn.Sequential(SharedBlock(pe), SharedBlock(pe))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def test_spec_of_a_shared_module_saved_under_its_alias(tmp_path):
    model, x = SharedPE().eval(), torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shared conv is a barrier
        chanprune.mask(model, x, amount=0.5)
        pruned = chanprune.export(model, x)
        save_pruned(pruned, model, x, tmp_path / "s.json")
        loaded = load_pruned(SharedPE(), tmp_path / "s.json")
    assert "blocks.1.pe.weight" in read_spec(tmp_path / "s.json")["tensors"]
    with torch.no_grad():
        assert outputs_match(pruned(x), loaded(x))


def test_spec_lists_kept_indices_in_physical_order(tmp_path):
    model, pruned, x = pruned_net("output")
    save_pruned(pruned, model, x, tmp_path / "net.json")
    doc = read_spec(tmp_path / "net.json")
    keep = doc["tensors"]["c3.weight"]["keep"]
    assert keep[0] is not None and len(keep[0]) == pruned.get_parameter("c3.weight").shape[0]
    assert keep[2] is None and keep[3] is None  # kernel dims are never pruned
    # the saved tensor is the original weight at exactly those indices, in that order
    w = model.get_parameter("c3.weight")
    rows, cols = (torch.tensor(k or range(n)) for k, n in zip(keep[:2], w.shape[:2], strict=True))
    assert torch.equal(w[rows][:, cols], pruned.get_parameter("c3.weight"))


def test_spec_round_trip_keeps_fine_tuned_weights(tmp_path):
    model, pruned, x = pruned_net()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    pruned(x).square().mean().backward()
    opt.step()
    save_pruned(pruned, model, x, tmp_path / "tuned.json")
    loaded = load_pruned(Net(), tmp_path / "tuned.json")
    with torch.no_grad():
        assert outputs_match(pruned(x), loaded(x))
        assert not outputs_match(model(x), loaded(x))  # really the tuned weights


def test_spec_for_another_architecture_names_the_tensor(tmp_path):
    model, pruned, x = pruned_net()
    save_pruned(pruned, model, x, tmp_path / "net.json")
    other = Net()
    other.c3 = nn.Conv2d(16, 7, 1)
    other.fc = nn.Linear(7, 5)
    with pytest.raises(chanprune.InputError, match=r"c3\.weight"):
        load_pruned(other, tmp_path / "net.json")


def test_tampered_weights_are_refused(tmp_path):
    model, pruned, x = pruned_net()
    _, weights = save_pruned(pruned, model, x, tmp_path / "net.json")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(chanprune.InputError, match="checksum"):
        load_pruned(Net(), tmp_path / "net.json")


class Payload:
    """Unpickling this creates a file: the proof that a loader executed the pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_bytes(marker) -> bytes:
    data = pickle.dumps(Payload(marker))
    return data


def test_the_payload_is_live(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(evil_bytes(marker)).close()
    assert marker.exists()  # so the tests below would notice if a loader unpickled it


def test_pickle_in_place_of_safetensors_is_refused_and_never_run(tmp_path):
    model, pruned, x = pruned_net()
    spec_path, weights = save_pruned(pruned, model, x, tmp_path / "net.json")
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"c1.0.weight": Payload(marker)}, buf)
    weights.write_bytes(buf.getvalue())
    doc = json.loads(spec_path.read_text())
    import hashlib

    doc["weights_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()  # pass the checksum
    spec_path.write_text(json.dumps(doc))
    with pytest.raises(chanprune.InputError, match="not a safetensors file"):
        load_pruned(Net(), spec_path)
    assert not marker.exists()


def test_pickle_in_place_of_the_spec_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "net.json").write_bytes(evil_bytes(marker))
    with pytest.raises(chanprune.InputError, match="not a chanprune spec"):
        load_pruned(Net(), tmp_path / "net.json")
    assert not marker.exists()


def test_spec_weights_must_sit_next_to_it(tmp_path):
    model, pruned, x = pruned_net()
    spec_path, _ = save_pruned(pruned, model, x, tmp_path / "net.json")
    doc = json.loads(spec_path.read_text())
    doc["weights"] = "../elsewhere.safetensors"
    spec_path.write_text(json.dumps(doc))
    with pytest.raises(chanprune.InputError, match="next to the spec"):
        load_pruned(Net(), spec_path)


def test_pt2_round_trip_with_the_safe_loader(tmp_path):
    model, pruned, x = pruned_net()
    save_program(pruned, x, tmp_path / "net.pt2")
    module = load_program(tmp_path / "net.pt2").module()
    xb = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert outputs_match(model(xb), module(xb))


def _repack(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info.filename)))


def test_pt2_with_a_pickled_weight_is_refused_and_never_run(tmp_path):
    _, pruned, x = pruned_net()
    save_program(pruned, x, tmp_path / "net.pt2")
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(Payload(marker), buf)

    def edit(name, data):
        if name.endswith("weights_config.json"):
            doc = json.loads(data)
            first = next(iter(doc["config"].values()))
            first["use_pickle"] = True
            return json.dumps(doc).encode()
        if name.endswith("/weight_0"):
            return buf.getvalue()
        return data

    _repack(tmp_path / "net.pt2", tmp_path / "evil.pt2", edit)
    with pytest.raises(chanprune.InputError, match="refusing to unpickle"):
        load_program(tmp_path / "evil.pt2")
    assert not marker.exists()


def test_pt2_with_pickled_sample_inputs_is_refused(tmp_path):
    _, pruned, x = pruned_net()
    save_program(pruned, x, tmp_path / "net.pt2")
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(((Payload(marker),), {}), buf)

    def edit(name, data):
        return buf.getvalue() if name.endswith(".pt") else data

    _repack(tmp_path / "net.pt2", tmp_path / "evil.pt2", edit)
    with pytest.raises(chanprune.InputError, match="not plain tensor data"):
        load_program(tmp_path / "evil.pt2")
    assert not marker.exists()


def test_not_an_archive(tmp_path):
    (tmp_path / "m.pt2").write_bytes(b"hello")
    with pytest.raises(chanprune.InputError, match=r"not a \.pt2 archive"):
        load_program(tmp_path / "m.pt2")
