"""Capture beyond one tuple of tensors (issue 24 item 2): keyword example inputs, dynamic batch
for any forward signature, dynamic sizes besides the batch through ``dynamic_shapes=``, the
export's refusal of sizes it was not captured for, and outputs holding caches."""

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.capture.trace import capture
from chanprune.deploy.saving import to_program
from chanprune.errors import CaptureError, InputError
from helpers import outputs_match

AUTO = torch.export.Dim.AUTO


class Gated(nn.Module):
    """A keyword-only tensor and a bool flag that changes the computation."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x, *, mask, shift=True, scale=None):
        y = self.b(torch.relu(self.a(x))) * mask
        return y + 1 if shift else y


def _gated(batch=3, seq=5):
    g = torch.Generator().manual_seed(batch * 10 + seq)
    return torch.randn(batch, seq, 8, generator=g), torch.rand(batch, seq, 1, generator=g)


def _masked(model, *args, **kw):
    torch.manual_seed(0)
    model = model.eval()
    masks = chanprune.mask(model, *args, **kw)
    assert masks, "nothing was masked"
    return model


def test_keyword_tensors_and_constants_are_inputs_of_the_export():
    x, m = _gated()
    kw = {"mask": m, "shift": False, "scale": None}
    model = _masked(Gated(), x, example_kwargs=kw)
    pruned = chanprune.export(model, x, example_kwargs=kw)
    assert pruned.a.weight.shape[0] < 16
    x4, m4 = _gated(batch=4)
    with torch.no_grad():  # same keywords, another batch; the constants default to theirs
        want = model(x4, mask=m4, shift=False)
        assert outputs_match(want, pruned(x4, mask=m4))
        assert outputs_match(want, pruned(x4, mask=m4, shift=False, scale=None))
    with pytest.raises(InputError, match=r"captured with shift=False .*example_kwargs="):
        pruned(x4, mask=m4, shift=True)
    # a copy and a pickled copy keep the keywords and the checks
    for again in (copy.deepcopy(pruned), _pickled(pruned)):
        assert outputs_match(want, again(x4, mask=m4))
        with pytest.raises(InputError, match="shift=False"):
            again(x4, mask=m4, shift=True)


def _pickled(module):
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_plan_and_apply_masks_take_keyword_inputs():
    x, m = _gated()
    kw = {"mask": m, "shift": False}
    model = Gated().eval()
    zeroed = chanprune.apply_masks(model, x, {"a.weight": [0, 1, 2]}, example_kwargs=kw)
    assert zeroed == {"a.weight": [0, 1, 2]}
    plan = chanprune.plan(model, x, example_kwargs=kw)
    assert plan.segments


def test_inputs_passed_by_keyword_only():
    x, m = _gated()
    kw = {"x": x, "mask": m}
    model = _masked(Gated(), (), example_kwargs=kw)
    pruned = chanprune.export(model, (), example_kwargs=kw)
    x4, m4 = _gated(batch=4)
    with torch.no_grad():
        assert outputs_match(model(x=x4, mask=m4), pruned(x=x4, mask=m4))


def test_bad_keyword_inputs_are_refused_by_key():
    x, m = _gated()
    with pytest.raises(InputError, match=r"example_kwargs\['mask'\] is a list"):
        chanprune.mask(Gated(), x, example_kwargs={"mask": [m]})
    with pytest.raises(InputError, match="example_kwargs must be a dict"):
        chanprune.mask(Gated(), x, example_kwargs=[m])
    with pytest.raises(InputError, match=r"example_kwargs\['mask'\] holds .*non-finite"):
        chanprune.mask(Gated(), x, example_kwargs={"mask": m / 0})
    with pytest.raises(InputError, match="calibration batches are positional"):
        chanprune.mask(Gated(), x, heuristic="hrank", calibration=[x], example_kwargs={"mask": m})


class Rows(nn.Module):
    """``forward(*xs)`` with a batch-sized arange, which the marker batch cannot generalise."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 12), nn.Linear(12, 6)

    def forward(self, *xs):
        x = xs[0] + xs[1]
        order = torch.arange(x.shape[0], device=x.device, dtype=x.dtype)
        return self.b(torch.relu(self.a(x))) + order[:, None]


def test_a_star_args_forward_gets_a_dynamic_batch():
    """It used to fall back silently to the example's batch: the dynamic shapes were a tuple,
    which torch.export does not match to ``*xs``."""
    x, y = torch.randn(2, 6), torch.randn(2, 6)
    model = _masked(Rows(), (x, y))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        pruned = chanprune.export(model, (x, y))
    assert not [w for w in said if "fixed sizes" in str(w.message)]
    assert capture(model, (x, y)).dynamic_batch
    x5, y5 = torch.randn(5, 6), torch.randn(5, 6)
    with torch.no_grad():
        assert outputs_match(model(x5, y5), pruned(x5, y5))


class StaticOnly(nn.Module):
    """Traceable only at a static batch of at most 8 (neither the marker batch nor a symbolic
    one): the fall-back to a fixed batch."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 12), nn.Linear(12, 6)

    def forward(self, x):
        if not isinstance(x.shape[0], int) or x.shape[0] > 8:
            raise RuntimeError("this model needs a small static batch")
        return self.b(torch.relu(self.a(x)))


def test_a_fixed_batch_fall_back_is_said_and_other_batches_are_refused_by_name():
    x = torch.randn(2, 6)
    with pytest.warns(UserWarning, match=r"fixed sizes: torch.export could not trace it with "):
        model = _masked(StaticOnly(), x)
    pruned = chanprune.export(model, x)
    with torch.no_grad():
        assert outputs_match(model(x), pruned(x))
    with pytest.raises(InputError, match=r"'x' has size 3 in dimension 0, .*batch is fixed"):
        pruned(torch.randn(3, 6))


class Tokens(nn.Module):
    """A BERT-like block: the sequence folds into the batch for the MLP and back."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, ids):
        h = self.emb(ids)
        b, s, c = h.shape
        flat = h.reshape(b * s, c)
        return (self.down(torch.relu(self.up(flat))).reshape(b, s, c) + h).mean(1)


def test_other_sequence_lengths_are_refused_by_name_unless_dynamic():
    ids = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    model = _masked(Tokens(), ids)
    pruned = chanprune.export(model, ids)
    longer = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(1))
    with pytest.raises(InputError, match=r"'ids' has size 20 in dimension 1.*size 16.*dynamic_sh"):
        pruned(longer)
    with pytest.raises(InputError, match="'ids' has 3 dimensions"):
        pruned(longer[None])
    dynamic = chanprune.export(model, ids, dynamic_shapes={"ids": {1: AUTO}})
    with torch.no_grad():
        assert outputs_match(model(longer), dynamic(longer))
    # the saved program: torch.export's own guard names the size, never a reshape error
    program = to_program(pruned, ids).module()
    with pytest.raises(Exception, match=r"ids.size\(\)\[1\] == 16") as err:
        program(longer)
    assert "reshape" not in str(err.value)


class FixedSize(nn.Module):
    """Branches on its feature map's height: torch.export can only keep it at the example's."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        y = self.conv(x)
        if y.shape[2] == 8:
            y = y * 2
        return self.fc(y.flatten(1))


def test_a_dynamic_dimension_the_model_fixes_is_said_not_silently_static():
    from torch.export import Dim

    model, x = FixedSize().eval(), torch.randn(2, 3, 8, 8)
    dyn = {"x": {2: Dim.AUTO, 3: Dim.AUTO}}
    with pytest.warns(UserWarning, match=r"kept dimension 2 of input 'x' at 8, dimension 3"):
        chanprune.mask(model, x, amount=0.25, dynamic_shapes=dyn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = chanprune.export(model, x, dynamic_shapes=dyn)
    with pytest.raises(InputError, match="dimension 2"):
        exported(torch.randn(2, 3, 10, 10))


def test_bad_dynamic_shapes_are_refused_by_name():
    ids = torch.randint(0, 50, (2, 16))
    with pytest.raises(InputError, match="dynamic_shapes names 'tokens', which is none"):
        chanprune.export(Tokens().eval(), ids, dynamic_shapes={"tokens": {1: AUTO}})
    with pytest.raises(InputError, match=r"dynamic_shapes\['ids'\] names dimension 2"):
        chanprune.export(Tokens().eval(), ids, dynamic_shapes={"ids": {2: AUTO}})
    with pytest.raises(InputError, match="with submodules, each part is captured at the sizes"):
        chanprune.mask(Tokens().eval(), ids, submodules=["up"], dynamic_shapes={"ids": {1: AUTO}})


class Cached(nn.Module):
    """Returns its output with a cache object, as Hugging Face decoders do with use_cache."""

    class Cache:
        pass

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)

    def forward(self, x, use_cache=True):
        y = self.a(x)
        return {"logits": y, "cache": self.Cache() if use_cache else None}


def test_a_cache_in_the_outputs_is_refused_saying_how_to_turn_it_off():
    x = torch.randn(2, 6)
    with pytest.raises(CaptureError, match=r"Cache at output\['cache'\].*'use_cache': False"):
        chanprune.mask(Cached().eval(), x)
    with pytest.raises(CaptureError, match=r"Cache at output\['cache'\]"):
        chanprune.export(Cached().eval(), x)
    pruned = chanprune.export(Cached().eval(), x, example_kwargs={"use_cache": False})
    assert pruned(x)["cache"] is None


def _tiny_llama(transformers):
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_hugging_face_llama_with_keyword_inputs():
    transformers = pytest.importorskip("transformers")
    model = _tiny_llama(transformers)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (2, 16), generator=g)
    with pytest.raises(CaptureError, match=r"DynamicCache at output.*'use_cache': False"):
        chanprune.mask(model, ids)
    kw = {"attention_mask": torch.ones(2, 16, dtype=torch.long), "use_cache": False}
    _masked(model, ids, example_kwargs=kw)
    pruned = chanprune.export(model, ids, example_kwargs=kw)
    ids3 = torch.randint(0, 100, (3, 16), generator=g)
    mask3 = torch.ones(3, 16, dtype=torch.long)
    mask3[0, :5] = 0  # padding
    with torch.no_grad():
        want = model(ids3, attention_mask=mask3, use_cache=False).logits
        assert outputs_match(want, pruned(ids3, attention_mask=mask3).logits)
    with pytest.raises(InputError, match="'input_ids' has size 20 in dimension 1"):
        pruned(torch.randint(0, 100, (3, 20)), attention_mask=torch.ones(3, 20, dtype=torch.long))
