"""Building the nn.Module a NetSpec describes, with seeded weights and an input."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .spec import MAP, Case, NetSpec, Op, out_shapes


# building --------------------------------------------------------------------------------------
class ChannelsLast(nn.Module):
    """Apply ``inner`` (a Linear or LayerNorm over channels) to an NCHW map via NHWC permutes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelsLastMLP(nn.Module):
    """ConvNeXt's block body: NCHW -> NHWC, (LayerNorm), Linear, act, Linear -> NCHW; the
    hidden channels live on the last dimension."""

    def __init__(self, c: int, hidden: int, out: int, act: str, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c) if norm else nn.Identity()
        self.fc1, self.fc2, self.act = nn.Linear(c, hidden), nn.Linear(hidden, out), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(_act(self.act, self.fc1(self.norm(x.permute(0, 2, 3, 1)))))
        return y.permute(0, 3, 1, 2)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, mid: int, gate: str) -> None:
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)
        self.gate = torch.sigmoid if gate == "sigmoid" else F.hardsigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class Scale(nn.Module):
    """ConvNeXt-style layer scale: a bare per-channel parameter broadcast over the map."""

    def __init__(self, c: int, kind: str) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.gamma[:, None, None] if self.kind == MAP else self.gamma)


class FrozenAffine(nn.Module):
    """A per-channel affine computed in forward from buffers: torchvision's FrozenBatchNorm2d
    (``how="frozen"``: ``x * scale + (b - rm * scale)``) or BatchNorm's formula written out
    (``"div"``: ``(x - rm) / sqrt(rv + eps) * w + b``)."""

    def __init__(self, c: int, how: str) -> None:
        super().__init__()
        self.how = how
        for name, value in (("weight", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0)):
            self.register_buffer(name, torch.full((c,), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b, rm, rv = (
            t.reshape(1, -1, 1, 1) for t in (self.weight, self.bias, self.mean, self.var)
        )
        if self.how == "div":
            return (x - rm) / (rv + 1e-5).sqrt() * w + b
        scale = w * (rv + 1e-5).rsqrt()
        return x * scale + (b - rm * scale)


class AddmmLinear(nn.Module):
    """GPT-2's ``Conv1D``: a linear over the last dimension written as ``addmm`` with its weight
    stored (in, out)."""

    def __init__(self, c: int, out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c, out) * c**-0.5)
        self.bias = nn.Parameter(torch.randn(out) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return flat.view(*x.shape[:-1], -1)


class Embed(nn.Module):
    """``x + embedding(ids)`` with ids thresholded from the map (positions, in NCHW): a
    lookup table producing channels, as a transformer's token embedding."""

    def __init__(self, c: int, vocab: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = (x.detach().sum(1) > 0).long() % self.table.num_embeddings  # (B, H, W)
        return x + self.table(ids).permute(0, 3, 1, 2)


class Twice(nn.Module):
    """One conv (+ BN) called twice (its calls are tied): ``f(relu(f(x)))``, or with ``pair``
    ``f(x) + f(y)`` for a second value of the same shape (a siamese encoder)."""

    def __init__(self, c: int, k: int, bn: bool, pair: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, k, padding=k // 2)
        self.bn = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.pair = pair
        if bn:
            with torch.no_grad():
                self.bn.running_mean.uniform_(-1.0, 1.0)
                self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = lambda t: self.bn(self.conv(t))  # noqa: E731
        return f(x) + f(y) if self.pair else f(torch.relu(f(x)))


def _instance_norm(c: int, affine: bool, track: bool) -> nn.Module:
    """InstanceNorm2d with random affine parameters and running statistics (not the identity
    ones of a fresh module, which would hide a wrong slice)."""
    norm = nn.InstanceNorm2d(c, affine=affine, track_running_stats=track)
    with torch.no_grad():
        for name, t in norm.state_dict().items():
            if name == "running_var":
                t.uniform_(0.5, 2.0)
            elif t.is_floating_point():
                t.uniform_(-1.0, 1.0)
    return norm


class HeadsAttention(nn.Module):
    """Multi-head attention over a map's positions, as transformers write it: separate q/k/v
    projections (``how="sdpa"``), one fused projection (``"fused"``), a rotary embedding on q
    and k (``"rotary"``), one key/value head for all q heads repeated by expand + reshape
    (``"gqa"``) or by SDPA itself (``"gqa-sdpa"``), or ``q @ k^T``, softmax, ``@ v`` written
    out (``"written"``); then an output projection to ``out`` channels."""

    def __init__(self, c: int, heads: int, d: int, how: str, out: int) -> None:
        super().__init__()
        self.heads, self.d, self.how = heads, d, how
        self.kv = 1 if how.startswith("gqa") else heads
        if how == "fused":
            self.qkv = nn.Linear(c, 3 * heads * d)
        else:
            self.q, self.k = nn.Linear(c, heads * d), nn.Linear(c, self.kv * d)
            self.v = nn.Linear(c, self.kv * d)
        self.o = nn.Linear(heads * d, out)

    def _heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], n, self.d).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, positions, C)
        if self.how == "fused":
            qkv = self.qkv(t).reshape(b, h * w, 3, self.heads, self.d).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            q = self._heads(self.q(t), self.heads)
            k, v = self._heads(self.k(t), self.kv), self._heads(self.v(t), self.kv)
        if self.how == "rotary":
            half = self.d // 2
            pos = torch.arange(h * w, dtype=x.dtype)[:, None] / (1.0 + torch.arange(half))
            cos, sin = torch.cat([pos, pos], -1).cos(), torch.cat([pos, pos], -1).sin()
            q = q * cos + torch.cat([-q[..., half:], q[..., :half]], -1) * sin
            k = k * cos + torch.cat([-k[..., half:], k[..., :half]], -1) * sin
        kw = {"enable_gqa": True} if self.how == "gqa-sdpa" else {}
        if self.how == "gqa":
            size = (b, self.kv, self.heads // self.kv, h * w, self.d)
            k = k[:, :, None].expand(size).reshape(b, self.heads, h * w, self.d)
            v = v[:, :, None].expand(size).reshape(b, self.heads, h * w, self.d)
        if self.how == "written":
            y = ((q * self.d**-0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        else:
            y = nn.functional.scaled_dot_product_attention(q, k, v, **kw)
        y = self.o(y.transpose(1, 2).reshape(b, h * w, self.heads * self.d))
        return y.transpose(1, 2).reshape(b, -1, h, w)


class WrittenNorm(nn.Module):
    """A norm over the channels (``dim``) written out as element-wise ops: Hugging Face's
    LlamaRMSNorm (``how="rms"``: statistics in float32, which on a float32 model traces as
    metadata assertions; ``"rms64"``: in float64, as casts), a LayerNorm (``"ln"``: mean-
    centred, with a bias, the variance as ``pow(2).mean``, ``"lnvar"``: as ``var``; over dim 1
    it is ConvNeXt's LayerNorm2d written out) or a gate from channel statistics (``"stat"``:
    ``x * sigmoid(amax + sum)`` over the channels, as CBAM's spatial attention)."""

    def __init__(self, c: int, how: str, dim: int) -> None:
        super().__init__()
        self.how, self.dim = how, dim
        self.weight = nn.Parameter(torch.rand(c) + 0.5)
        self.bias = nn.Parameter(torch.rand(c) - 0.5) if how.startswith("ln") else None

    def _param(self, p: torch.Tensor, rank: int) -> torch.Tensor:
        return p if self.dim == -1 else p.reshape(-1, *[1] * (rank - 1 - self.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._param(self.weight, x.dim())
        d = self.dim
        if self.how == "stat":
            return w * x * torch.sigmoid(x.amax(d, keepdim=True) + x.sum(d, keepdim=True))
        if self.how.startswith("ln"):
            u = x.mean(d, keepdim=True)
            if self.how == "ln":
                s = (x - u).pow(2).mean(d, keepdim=True)
            else:
                s = x.var(d, keepdim=True, unbiased=False)
            return (x - u) / torch.sqrt(s + 1e-5) * w + self._param(self.bias, x.dim())
        h = x.to(torch.float64 if self.how == "rms64" else torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(d, keepdim=True) + 1e-6)
        return w * h.to(x.dtype)


class Shuffle(nn.Module):
    """ShuffleNet's channel shuffle, written out (view-transpose-reshape) or as the module."""

    def __init__(self, groups: int, how: str) -> None:
        super().__init__()
        self.groups, self.how = groups, how
        self.module = nn.ChannelShuffle(groups) if how == "module" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.module is not None:
            return self.module(x)
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class Views(nn.Module):
    """A two-view encoder's split: the batch cut in two views at ``n // 2`` (``how``: a split
    or two slices; a view may be empty), each through its own 1x1 conv (``body="conv"``) or as
    it is, concatenated back along the batch (``swap``: in the other order). The sizes depend
    on the batch, so capture takes the symbolic trace. (``tensor_split`` is left out: its
    decomposition holds for the traced batch's parity only, and the export refuses the other.)"""

    def __init__(self, c: int, out: int, how: str, body: str, swap: bool) -> None:
        super().__init__()
        self.how, self.swap = how, swap
        convs = body == "conv"
        self.a = nn.Conv2d(c, out, 1) if convs else nn.Identity()
        self.b = nn.Conv2d(c, out, 1) if convs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.how == "split":
            a, b = torch.split(x, [n // 2, n - n // 2], 0)
        else:
            a, b = x[: n // 2], x[n // 2 :]
        a, b = self.a(a), self.b(b)
        return torch.cat([b, a] if self.swap else [a, b], 0)


def _act(fn: str, x: torch.Tensor) -> torch.Tensor:
    if fn == "leaky_relu":
        return F.leaky_relu(x, 0.1)
    return getattr(F, fn)(x) if fn != "tanh" else torch.tanh(x)


class FuzzNet(nn.Module):
    """The network a :class:`NetSpec` describes; layer ``i`` is ``self.layers['l{i}']``."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        shapes: list[tuple[str, int, int]] = [(MAP, spec.in_ch, spec.size)]
        self.layers = nn.ModuleDict()
        for i, op in enumerate(spec.ops):
            m = _module(op, shapes[op.src[0]])
            if m is not None:
                self.layers[f"l{i}"] = m
            shapes.extend(out_shapes(op, shapes))

    def forward(self, x: torch.Tensor) -> Any:
        vals = [x]
        for i, op in enumerate(self.spec.ops):
            xs = [vals[s] for s in op.src]
            m = self.layers[f"l{i}"] if f"l{i}" in self.layers.keys() else None  # noqa: SIM118
            vals.extend(_apply(op, xs, m))
        outs = tuple(vals[i] for i in self.spec.outputs)
        return outs[0] if len(outs) == 1 else outs


def _module(op: Op, shape: tuple[str, int, int]) -> nn.Module | None:
    kind, c, _ = shape
    k = op.kind
    if k == "conv":
        pad = op.get("dil") * (op.get("k") // 2)
        return nn.Conv2d(
            c, op.get("out"), op.get("k"), op.get("stride"), pad, op.get("dil"),
            groups=op.get("groups"), bias=op.get("bias"),
        )  # fmt: skip
    if k == "linear":
        return nn.Linear(c, op.get("out"), bias=op.get("bias"))
    if k == "bn":
        return nn.BatchNorm2d(c) if kind == MAP else nn.BatchNorm1d(c)
    if k == "gn":
        return nn.GroupNorm(op.get("groups"), c)
    if k == "ln":
        return ChannelsLast(nn.LayerNorm(c)) if kind == MAP else nn.LayerNorm(c)
    if k == "plin":
        return ChannelsLast(nn.Linear(c, op.get("out")))
    if k == "se":
        return SqueezeExcite(c, op.get("mid"), op.get("gate"))
    if k == "mlp":
        return ChannelsLastMLP(c, op.get("hidden"), op.get("out"), op.get("act"), op.get("norm"))
    if k == "shuffle":
        return Shuffle(op.get("groups"), op.get("how"))
    if k == "views":
        return Views(c, op.get("out"), op.get("how"), op.get("body"), op.get("swap"))
    if k == "scale":
        return Scale(c, kind)
    if k == "frozen":
        return FrozenAffine(c, op.get("how"))
    if k == "convt":
        return nn.ConvTranspose2d(
            c, op.get("out"), op.get("k"), 1, op.get("k") // 2, groups=op.get("groups"),
            bias=op.get("bias"),
        )  # fmt: skip
    if k == "addmm":
        return ChannelsLast(AddmmLinear(c, op.get("out")))
    if k == "embed":
        return Embed(c, op.get("vocab"))
    if k == "twice":
        return Twice(c, op.get("k"), op.get("bn"), op.get("pair"))
    if k == "inorm":
        return _instance_norm(c, op.get("affine"), op.get("track"))
    if k == "attention":
        return HeadsAttention(c, op.get("heads"), op.get("d"), op.get("how"), op.get("out"))
    if k == "rmsnorm":
        if op.get("last"):
            return ChannelsLast(WrittenNorm(c, op.get("how"), -1))
        return WrittenNorm(c, op.get("how"), 1)
    return None


def _apply(op: Op, xs: list[torch.Tensor], m: nn.Module | None) -> list[torch.Tensor]:
    k, x = op.kind, xs[0]
    if m is not None:
        return [m(x, xs[1])] if k == "twice" else [m(x)]
    if k == "act":
        return [_act(op.get("fn"), x)]
    if k == "add":
        return [x + xs[1] if op.get("fn") == "add" else x - xs[1]]
    if k == "cat":
        return [torch.cat(xs, 1)]
    if k == "split":
        if op.get("chunks"):
            return list(torch.chunk(x, op.get("chunks"), 1))
        return list(torch.split(x, list(op.get("sizes")), 1))
    if k == "pool":
        how = op.get("how")
        if how == "max2":
            return [F.max_pool2d(x, 2)]
        if how == "avg3":
            return [F.avg_pool2d(x, 3, 1, 1)]
        return [F.max_pool2d(x, 3, 2, 1)]
    if k == "gap":
        if op.get("how") == "mean":
            return [x.mean((2, 3))]
        return [F.adaptive_avg_pool2d(x, 1).flatten(1)]
    if k == "flatten":
        return [x.flatten(1)]
    if k == "slice":
        return [x[:, op.get("start") : op.get("stop")]]
    if k == "shift":
        y = torch.roll(x, shifts=(op.get("by"), op.get("by")), dims=(2, 3))
        y = y + x.new_zeros(x.shape[2:])  # a mask built from x's dtype and device only
        return [(1 - torch.sigmoid(y)) * x if op.get("gru") else y]
    if k == "gate":
        return [x * torch.sigmoid(xs[1])]
    raise ValueError(f"unknown op {op!r}")


def build(case: Case) -> tuple[FuzzNet, torch.Tensor]:
    """The model (random init from ``case.seed``, non-trivial norm statistics) and an input."""
    gen = torch.Generator().manual_seed(case.seed)
    with torch.random.fork_rng():
        torch.manual_seed(case.seed)
        model = FuzzNet(case.net).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1, generator=gen)
                m.running_var.uniform_(0.5, 2, generator=gen)
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.5, 0.5, generator=gen)
            if isinstance(m, FrozenAffine):
                for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.5, 0.5), (m.mean, -1, 1)):
                    t.uniform_(lo, hi, generator=gen)
                m.var.uniform_(0.5, 2, generator=gen)
    n = case.net
    x = torch.randn(case.batch, n.in_ch, n.size, n.size, generator=gen)
    return model, x
