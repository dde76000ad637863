"""Brute-force references for the solver tests (exponential: tiny instances only)."""

from __future__ import annotations

import math
from itertools import permutations, product

from chanprune.layout.solver import LayoutPlan, LayoutProblem
from chanprune.layout.solver.pqtree import LEAF, PNODE, Node, PQTree


def is_consecutive(order, members) -> bool:
    """True when ``members`` occupy a contiguous run of ``order``."""
    members = set(members)
    places = [i for i, x in enumerate(order) if x in members]
    return not places or places[-1] - places[0] + 1 == len(places)


def valid_orders(universe, sets) -> set[tuple]:
    """Every order of ``universe`` in which all ``sets`` are consecutive."""
    return {p for p in permutations(universe) if all(is_consecutive(p, s) for s in sets)}


def all_frontiers(tree: PQTree) -> set[tuple[int, ...]]:
    """Every frontier of the PQ-tree (all P-node permutations x all Q-node reversals)."""
    if tree.root is None:
        return {()}
    return {tuple(f) for f in _frontiers(tree.root)}


def _frontiers(node: Node) -> list[list[int]]:
    if node.kind == LEAF:
        return [[node.value]]
    kids = node.kids()
    parts = [_frontiers(k) for k in kids]
    arrangements = (
        permutations(range(len(kids)))
        if node.kind == PNODE
        else [
            tuple(range(len(kids))),
            tuple(reversed(range(len(kids)))),
        ]
    )
    out = []
    for arrangement in arrangements:
        for combo in product(*(parts[i] for i in arrangement)):
            out.append([leaf for piece in combo for leaf in piece])
    return out


def honours_fixed(order, fixed) -> bool:
    """True when every fixed sequence is a consecutive run of ``order`` in that direction."""
    where = {c: i for i, c in enumerate(order)}
    return all(
        all(where[seq[k]] == where[seq[0]] + k for k in range(len(seq))) for seq in fixed if seq
    )


def brute_optimum(problem: LayoutProblem) -> float | None:
    """Minimum copy cost over all orders honouring ``fixed`` (None: no such order)."""
    channels = list(problem.channels)
    bit = {c: 1 << i for i, c in enumerate(channels)}
    masks = [sum(bit[c] for c in s) for s in problem.consumers]
    weights = problem.weights or (1.0,) * len(masks)
    costs = [w * len(s) for w, s in zip(weights, problem.consumers, strict=True)]
    best = None
    for perm in permutations(channels):
        if not honours_fixed(perm, problem.fixed):
            continue
        windows = {0}
        for i in range(len(perm)):
            acc = 0
            for c in perm[i:]:
                acc |= bit[c]
                windows.add(acc)
        cost = math.fsum(c for m, c in zip(masks, costs, strict=True) if m not in windows)
        if best is None or cost < best:
            best = cost
    return best


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def check_plan(problem: LayoutProblem, plan: LayoutPlan) -> None:
    """Every structural promise of a plan (not its optimality)."""
    order = plan.order
    assert sorted(order) == sorted(problem.channels)
    assert len(set(order)) == len(order)
    assert len(plan.reads) == len(problem.consumers)
    weights = problem.weights or (1.0,) * len(problem.consumers)
    for members, read in zip(problem.consumers, plan.reads, strict=True):
        assert {order[i] for i in read.indices} == set(members)
        assert len(read.indices) == len(members)
        if read.kind == "view":
            assert read.indices == tuple(range(read.start, read.stop))
            assert read.copied == 0
        else:
            assert read.kind == "gather"
            assert (read.start, read.stop) == (-1, -1)
            assert list(read.indices) == sorted(read.indices)
            assert read.copied == len(members)
            assert not is_consecutive(order, members), "a contiguous consumer was gathered"
    expected = math.fsum(w * r.copied for w, r in zip(weights, plan.reads, strict=True))
    assert close(plan.cost, expected)
    assert plan.lower_bound <= plan.cost + 1e-9
    if plan.optimal:
        assert close(plan.lower_bound, plan.cost)
    all_views = all(r.kind == "view" for r in plan.reads)
    assert (plan.method == "c1p") == all_views
    assert plan.method in ("c1p", "exact", "heuristic")
    assert plan.optimal == (plan.method != "heuristic")
    assert honours_fixed(order, problem.fixed)
