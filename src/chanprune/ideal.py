"""The "ideal" reference: the pruned model's layer sizes with every run-time copy removed.

Each gather (``index_select``) in an exported module is replaced by a slice of the first channels
(a view), and each pad-and-gather by a plain pad, so the model keeps exactly the pruned channel
counts and does no gathering. Its numbers are meaningless; its latency is the
physical limit a copy-free export of the same masks could reach.
"""

from __future__ import annotations

import copy

import torch
from torch import fx

aten = torch.ops.aten


def ideal(exported: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``exported`` whose gathers and pads are slices (same shapes, no copies)."""
    gm = copy.deepcopy(exported)
    graph = gm.graph
    for node in list(graph.nodes):
        if node.target is not aten.index_select.default:
            continue
        src, dim, idx = node.args
        k = int(_index(gm, idx).numel())
        if src.op == "call_function" and src.target is aten.constant_pad_nd.default:
            src = src.args[0]
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
    """The first ``k`` channels of ``x`` along ``dim``: a view, or (when ``x`` is narrower, as
    for a residual operand that lost channels) a zero pad, the one copy that cannot be avoided."""
    n = x.shape[dim]
    if k <= n:
        return x.narrow(dim, 0, k)
    return torch.nn.functional.pad(x, [0, 0] * (x.dim() - 1 - dim) + [0, k - n])
