"""Attention with separate q/k/v projections (Hugging Face, diffusers): heads, grouped-query
attention, rotary embeddings, per-head masks, cross-attention. Fused qkv (timm) is tested in
test_rules.py."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import chanprune
from chanprune.analysis.propagate import analyze
from chanprune.capture.trace import capture
from helpers import outputs_match, prune_and_check


def rotate_half(x):
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat([-b, a], -1)


class SelfAttention(nn.Module):
    """Llama-style: q/k/v/o projections, optional rotary, ``kv_heads`` key/value heads shared by
    ``heads // kv_heads`` q heads (repeated with expand + reshape, or SDPA's ``enable_gqa``)."""

    def __init__(
        self, dim=32, heads=4, kv_heads=4, rotary=False, gqa="repeat", mask=None, cross=False
    ):
        super().__init__()
        self.heads, self.kv_heads, self.d = heads, kv_heads, dim // heads
        self.rotary, self.gqa, self.mask, self.cross = rotary, gqa, mask, cross
        self.inp = nn.Linear(8, dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, kv_heads * self.d)
        self.v = nn.Linear(dim, kv_heads * self.d)
        self.o = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)
        self.register_buffer("freq", 1.0 / 100 ** (torch.arange(0, self.d, 2) / self.d))

    def _split(self, t, heads):
        b, n, _ = t.shape
        return t.view(b, n, heads, self.d).transpose(1, 2)

    def forward(self, x, memory=None):
        x = self.inp(x)
        b, n, c = x.shape
        src = memory if self.cross else x
        q = self._split(self.q(x), self.heads)
        k = self._split(self.k(src), self.kv_heads)
        v = self._split(self.v(src), self.kv_heads)
        if self.rotary:
            angle = torch.arange(n, dtype=x.dtype)[:, None] * self.freq[None, :]
            angle = torch.cat([angle, angle], -1)[None, None]
            cos, sin = angle.cos(), angle.sin()
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        kw = {}
        if self.kv_heads != self.heads and self.gqa == "repeat":
            rep = self.heads // self.kv_heads
            m = k.shape[2]
            k = k[:, :, None].expand(b, self.kv_heads, rep, m, self.d).reshape(b, -1, m, self.d)
            v = v[:, :, None].expand(b, self.kv_heads, rep, m, self.d).reshape(b, -1, m, self.d)
        elif self.kv_heads != self.heads:
            kw["enable_gqa"] = True
        if self.mask == "per-head":
            kw["attn_mask"] = torch.arange(self.heads * n * n, dtype=x.dtype).reshape(
                1, self.heads, n, n
            ) / (self.heads * n * n)
        y = nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3, **kw)
        x = x + self.o(y.transpose(1, 2).reshape(b, n, c))
        return self.head(x.mean(1))


def _rows(exported, name):
    return exported.get_parameter(name).shape[0]


def _no_barrier(model, *x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        an = analyze(capture(model, x))
    assert not an.barriers


@pytest.mark.parametrize(
    "kw",
    [{}, {"rotary": True}, {"kv_heads": 2}, {"kv_heads": 2, "gqa": "sdpa"}, {"mask": "per-head"}],
    ids=["plain", "rotary", "gqa-repeat", "gqa-sdpa", "per-head-mask"],
)
def test_separate_projections_are_no_barrier_and_prune_exactly(kw):
    torch.manual_seed(0)
    model = SelfAttention(**kw).eval()
    x = torch.randn(2, 5, 8)
    _no_barrier(model, x)
    for side in ("output", "input"):
        m = SelfAttention(**kw).eval()
        m.load_state_dict(model.state_dict())
        exported, masks = prune_and_check(m, x, method="reorder", amount=0.3, side=side)
        assert masks and sum(p.numel() for p in exported.parameters()) < sum(
            p.numel() for p in m.parameters()
        )


def test_a_head_nobody_reads_is_dropped_whole():
    """o reads nothing of head 1: its q, k and v rows and its mask rows go."""
    model = SelfAttention(mask="per-head").eval()
    x = torch.randn(2, 5, 8)
    chanprune.apply_masks(model, x, {"o.weight": list(range(8, 16))}, side="input")
    exported, _ = prune_and_check(model, x, method="reorder")
    assert [_rows(exported, f"{p}.weight") for p in "qkv"] == [24, 24, 24]
    assert exported.get_parameter("o.weight").shape[1] == 24


def test_grouped_query_heads_drop_a_key_value_head_with_its_whole_group():
    """kv head 1 serves q heads 2 and 3: only when neither is read does it go."""
    torch.manual_seed(0)
    model = SelfAttention(kv_heads=2, rotary=True).eval()
    x = torch.randn(2, 5, 8)
    m = SelfAttention(kv_heads=2, rotary=True).eval()
    m.load_state_dict(model.state_dict())
    chanprune.apply_masks(model, x, {"o.weight": list(range(16, 24))}, side="input")  # head 2
    exported, _ = prune_and_check(model, x, method="reorder")
    assert (_rows(exported, "q.weight"), _rows(exported, "k.weight")) == (24, 16)
    chanprune.apply_masks(m, x, {"o.weight": list(range(16, 32))}, side="input")  # heads 2, 3
    exported, _ = prune_and_check(m, x, method="reorder")
    assert (_rows(exported, "q.weight"), _rows(exported, "k.weight")) == (16, 8)
    assert _rows(exported, "v.weight") == 8


def test_rotary_units_are_pairs():
    """A rotary embedding rotates (u, u + d/2) together: zeroing q row u alone keeps its
    partner and the k pair; zeroing both q rows of a pair drops the k pair too."""
    model = SelfAttention(rotary=True).eval()
    x = torch.randn(2, 5, 8)
    m = SelfAttention(rotary=True).eval()
    m.load_state_dict(model.state_dict())
    chanprune.apply_masks(model, x, {"q.weight": [1]})  # head 0, u = 1 (partner 5)
    exported, _ = prune_and_check(model, x, method="reorder")
    assert (_rows(exported, "q.weight"), _rows(exported, "k.weight")) == (31, 32)
    chanprune.apply_masks(m, x, {"q.weight": [1, 5]})
    exported, _ = prune_and_check(m, x, method="reorder")
    assert (_rows(exported, "q.weight"), _rows(exported, "k.weight")) == (30, 30)


def test_zero_key_rows_make_their_query_partners_useless():
    model = SelfAttention().eval()
    x = torch.randn(2, 5, 8)
    chanprune.apply_masks(model, x, {"k.weight": [0, 9, 10]})
    exported, _ = prune_and_check(model, x, method="reorder")
    assert (_rows(exported, "q.weight"), _rows(exported, "k.weight")) == (29, 29)


def test_cross_attention_reads_untracked_keys_in_full():
    model = SelfAttention(cross=True).eval()
    x, memory = torch.randn(2, 5, 8), torch.randn(2, 7, 32)
    chanprune.apply_masks(model, (x, memory), {"q.weight": [0, 1, 2], "v.weight": [4]})
    exported = chanprune.export(model, (x, memory))
    x3, m3 = torch.randn(3, 5, 8), torch.randn(3, 7, 32)
    with torch.no_grad():
        assert outputs_match(model(x3, m3), exported(x3, m3))
    assert exported.get_parameter("q.weight").shape[0] == 29
    assert exported.get_parameter("o.weight").shape[1] == 31


@pytest.mark.parametrize("cls", ["BertConfig", "LlamaConfig"])
def test_hugging_face_attention_heads_are_pruned(cls):
    transformers = pytest.importorskip("transformers")
    config = getattr(transformers, cls)(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=50,
        use_cache=False,
    )
    model = transformers.AutoModel.from_config(config).eval()
    ids = torch.randint(0, 50, (2, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        an = analyze(capture(model, ids))
    assert not [b for b in an.barriers if "view" in b.reason]
    layer = "layers.0.self_attn" if cls == "LlamaConfig" else "encoder.layer.0.attention.self"
    q = f"{layer}.{'q_proj' if cls == 'LlamaConfig' else 'query'}.weight"
    assert not an.pinned[an.root[an.producer_of(q).ids]].any()


class WrittenOut(nn.Module):
    """Swin-style attention written out: fused qkv split by select, q scaled by a constant,
    ``q @ k^T`` plus a per-head bias, softmax, ``@ v``; windows shifted by ``roll`` over the
    spatial dims of a channels-last map, with a mask built by ``new_zeros``."""

    def __init__(self, dim=16, heads=4, shift=False):
        super().__init__()
        self.heads, self.shift = heads, shift
        self.stem = nn.Conv2d(3, dim, 1)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.randn(heads, 4, 4))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)  # (B, 2, 2, C)
        if self.shift:
            x = torch.roll(x, shifts=(1, 1), dims=(1, 2))
        b, h, w, c = x.shape
        t = x.reshape(b, h * w, c)
        qkv = self.qkv(t).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        s = (q * 0.5) @ k.transpose(-2, -1) + self.bias[None]
        if self.shift:
            mask = x.new_zeros((h * w, h * w))
            mask[0, 1:] = -1.0
            s = s + mask
        y = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, c)
        return self.head((t + self.proj(y)).mean(1))


@pytest.mark.parametrize("shift", [False, True])
def test_written_out_attention_prunes_head_widths(shift):
    torch.manual_seed(0)
    model = WrittenOut(shift=shift).eval()
    x = torch.randn(2, 3, 2, 2)
    _no_barrier(model, x)
    # q0 zero (head 0: k16 goes too), k21 zero (head 1: q5 too), v40 zero -> 48 - 5 rows
    chanprune.apply_masks(model, x, {"qkv.weight": [0, 21, 40]})
    exported, _ = prune_and_check(model, x, method="reorder")
    assert exported.get_parameter("qkv.weight").shape[0] == 43
    assert exported.get_parameter("proj.weight").shape[1] == 15
    for side in ("output", "input"):
        m = WrittenOut(shift=shift).eval()
        prune_and_check(m, x, method="reorder", amount=0.3, side=side)


def test_rolling_the_channels_stays_a_barrier():
    class Rolled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.b(torch.roll(self.a(x), 1, 1))

    model = Rolled().eval()
    with pytest.warns(UserWarning, match="roll"):
        an = analyze(capture(model, torch.randn(2, 3, 4, 4)))
    assert an.pinned[an.root[an.producer_of("a.weight").ids]].all()


class Mha(nn.Module):
    """torch.nn.MultiheadAttention: tokens first inside, batch and heads merged by its views."""

    def __init__(self, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.inp = nn.Linear(8, 32)
        self.att = nn.MultiheadAttention(32, 4, batch_first=batch_first)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.inp(x)
        t = x if self.batch_first else x.transpose(0, 1)
        y, _ = self.att(t, t, t, need_weights=False)
        y = y if self.batch_first else y.transpose(0, 1)
        return self.fc((x + y).mean(1))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_prunes_heads(batch_first):
    torch.manual_seed(0)
    model = Mha(batch_first).eval()
    x = torch.randn(2, 6, 8)
    _no_barrier(model, x)
    # out_proj reads nothing of head 3: its q, k, v rows go (3 x 8 of the 96)
    chanprune.apply_masks(model, x, {"att.out_proj.weight": list(range(24, 32))}, side="input")
    exported, _ = prune_and_check(model, x, method="reorder")
    assert exported.get_parameter("att.in_proj_weight").shape[0] == 72
    for side in ("output", "input"):
        m = Mha(batch_first).eval()
        prune_and_check(m, x, method="reorder", amount=0.3, side=side)


def test_torchvision_vision_transformer_prunes_heads():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.VisionTransformer(
        image_size=16, patch_size=8, num_layers=1, num_heads=4, hidden_dim=32, mlp_dim=64
    ).eval()
    x = torch.randn(2, 3, 16, 16)
    _no_barrier(model, x)
    exported, _ = prune_and_check(model, x, method="reorder", amount=0.3, side="input")
    name = "encoder.layers.encoder_layer_0.self_attention.out_proj.weight"
    assert exported.get_parameter(name).shape[1] < 32  # it reads fewer head channels


def test_llama_heads_prune_with_a_dynamic_sequence_length():
    """A symbolic length turns HF's ``k[:, :, None, :, :]`` into no-op slices around the
    grouped-query repeat; the heads stay prunable and the export runs at another length."""
    transformers = pytest.importorskip("transformers")
    from torch.export import Dim

    config = transformers.LlamaConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=50, use_cache=False,
    )  # fmt: skip
    model = transformers.LlamaModel(config).eval()
    ids, dyn = torch.randint(0, 50, (2, 6)), {"input_ids": {1: Dim.AUTO}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        an = analyze(capture(model, ids, dynamic_shapes=dyn))
        assert not an.barriers
        chanprune.mask(model, ids, amount=0.3, dynamic_shapes=dyn)
        exported = chanprune.export(model, ids, dynamic_shapes=dyn)
    longer = torch.randint(0, 50, (3, 9))
    with torch.no_grad():
        out = exported(longer)
        out = out if isinstance(out, torch.Tensor) else out["last_hidden_state"]
        assert outputs_match(model(longer).last_hidden_state, out)
    assert exported.get_parameter("layers.0.self_attn.q_proj.weight").shape[0] < 32
