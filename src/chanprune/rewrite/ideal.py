"""The "ideal" reference: the pruned model's layer sizes with every run-time copy removed.

Each gather (``index_select``, ``gather`` or ``gather_rows``) in an exported module, each
pad-and-gather and each slice the exporter emitted to read a subset of channels becomes a
*prefix view*: the first elements of the source's storage seen as a contiguous tensor of the
read's shape. So the model keeps exactly the pruned channel counts and copies nothing at any
batch size. A plain channel slice would not do: past batch 1 it is strided, and a convolution
copies a strided input to a contiguous one before it runs (``aten::contiguous`` inside
``mkldnn_convolution``). Its numbers are meaningless; its latency is the physical limit a
copy-free export of the same masks could reach.

A residual write through an index (``writers.py``) becomes a slice add into the stream's first
channels, and a stream buffer built by ``spread`` a zero pad at its end (as a pad-and-gather).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import fx

from .rewriter import READ_VIEW, gather_rows
from .writers import WRITE, add_index_, add_slice, add_slice_, spread

aten = torch.ops.aten


def ideal(exported: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``exported`` whose channel reads are contiguous views (same shapes, no copies).

    For latency comparisons only: its outputs are meaningless, but its time is the limit a
    copy-free export of the same masks could reach."""
    gm = copy.deepcopy(exported)
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in (aten.index_select.default, aten.gather.default):
            src, dim, idx = node.args
            if node.target is aten.gather.default:  # index: expand(buffer, sizes)
                idx = idx.args[0]
            k = int(_index(gm, idx).numel())
            if src.op == "call_function" and src.target is aten.constant_pad_nd.default:
                src = src.args[0]
        elif node.target is gather_rows:  # channels (dim 1) copied as rows
            src, idx = node.args
            dim, k = 1, int(_index(gm, idx).numel())
        elif node.target is aten.slice.Tensor and node.meta.get(READ_VIEW):
            src, dim, start, end = node.args[:4]
            k = end - start
        elif node.target is spread:  # a stream's new buffer: its first operand, padded
            src, dim, _, k = node.args
        elif node.target in (add_index_, aten.index_add.default) and WRITE in node.meta:
            big, dim, idx, small = node.args
            k = int(_index(gm, idx).numel())
            add = add_slice_ if node.target is add_index_ else add_slice
            alpha = node.kwargs.get("alpha", 1)
            with graph.inserting_before(node):
                new = graph.call_function(add, (big, small, dim, 0, k, alpha))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            continue
        else:
            continue
        with graph.inserting_before(node):
            new = graph.call_function(_take, (src, dim, k))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _index(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    return gm.get_buffer(node.target) if node.op == "get_attr" else node


@torch.fx.wrap
def _take(x: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """``x`` with ``k`` channels along ``dim``, copying nothing: a contiguous view of the first
    elements of ``x`` (a strided slice where ``x`` itself is strided), or, where ``x`` is
    narrower (a residual operand that lost channels), a zero pad: the one copy that cannot be
    avoided."""
    n = x.shape[dim]
    if k > n:
        return torch.nn.functional.pad(x, [0, 0] * (x.dim() - 1 - dim) + [0, k - n])
    if not x.is_contiguous():
        return x.narrow(dim, 0, k)
    shape = list(x.shape)
    shape[dim] = k
    strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    return x.as_strided(shape, strides, x.storage_offset())
