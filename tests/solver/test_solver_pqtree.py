"""The PQ-tree and the consecutive-ones tests, against brute force over all permutations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanprune.layout.solver import PQTree, consecutive_order, has_consecutive_ones
from solver_brute import all_frontiers, is_consecutive, valid_orders

families = st.integers(0, 6).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(st.sets(st.integers(0, n - 1)) if n else st.just(set()), max_size=6),
    )
)


@settings(max_examples=400, deadline=None)
@given(families)
def test_tree_represents_exactly_the_valid_orders(family):
    """After each reduction the frontiers are exactly the orders keeping the kept sets.

    A failed reduction must be a truly impossible set and must leave the tree unchanged.
    """
    n, sets = family
    tree = PQTree(n)
    kept: list[set[int]] = []
    for members in sets:
        before = all_frontiers(tree)
        if tree.reduce(members):
            kept.append(members)
            assert all_frontiers(tree) == valid_orders(range(n), kept)
        else:
            assert not valid_orders(range(n), [*kept, members])
            assert all_frontiers(tree) == before


def _leaves_and_shape(tree: PQTree) -> None:
    """P-nodes have >= 2 children, Q-nodes >= 3, parent pointers are right."""
    stack = [tree.root] if tree.root is not None else []
    while stack:
        node = stack.pop()
        kids = node.kids()
        if node.kind == "P":
            assert len(kids) >= 2
        elif node.kind == "Q":
            assert len(kids) >= 3
        for kid in kids:
            assert kid.parent is node
        stack.extend(kids)


@settings(max_examples=200, deadline=None)
@given(families)
def test_tree_stays_canonical(family):
    n, sets = family
    tree = PQTree(n)
    for members in sets:
        tree.reduce(members)
        _leaves_and_shape(tree)


@settings(max_examples=300, deadline=None)
@given(families)
def test_c1p_test_matches_brute_force(family):
    n, sets = family
    universe = [f"c{i}" for i in range(n)]
    named = [{universe[i] for i in s} for s in sets]
    expected = bool(valid_orders(universe, named))
    assert has_consecutive_ones(named, universe) == expected
    order = consecutive_order(named, universe)
    if expected:
        assert sorted(order) == sorted(universe)
        assert all(is_consecutive(order, s) for s in named)
    else:
        assert order is None


def test_interval_chain_and_nesting():
    sets = [{1, 2}, {2, 3}, {3, 4}, {4, 5}, {1, 2, 3}, {2, 3, 4, 5}]
    order = consecutive_order(sets, range(1, 6))
    assert order in ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    nested = [{1, 2, 3, 4, 5, 6}, {2, 3, 4}, {3}, {3, 4}, set()]
    assert has_consecutive_ones(nested, range(1, 8))


def test_keeps_the_universe_order_when_it_works():
    assert consecutive_order([{2, 3}, {3, 4, 5}], range(7)) == list(range(7))


def _tucker(name: str, k: int = 0) -> tuple[list[set[int]], int]:
    """Tucker's minimal non-C1P matrices as (rows, columns)."""
    if name == "I":  # a cycle
        return [{i, i + 1} for i in range(1, k)] + [{1, k}], k
    if name == "II":
        rows = [{i, i + 1} for i in range(1, k - 1)]
        rows += [set(range(1, k - 1)) | {k}, set(range(2, k)) | {k}]
        return rows, k
    if name == "III":
        rows = [{i, i + 1} for i in range(1, k)] + [set(range(2, k)) | {k + 1}]
        return rows, k + 1
    if name == "IV":
        return [{1, 2}, {3, 4}, {5, 6}, {2, 4, 6}], 6
    return [{1, 2}, {3, 4}, {1, 2, 3, 4}, {1, 4, 5}], 5  # "V"


TUCKER = [("I", 3), ("I", 4), ("I", 6), ("II", 4), ("II", 5), ("III", 3), ("III", 4)]
TUCKER += [("IV", 0), ("V", 0)]


@pytest.mark.parametrize(("name", "k"), TUCKER)
def test_tucker_configurations_are_minimal_non_c1p(name, k):
    rows, cols = _tucker(name, k)
    universe = range(1, cols + 1)
    assert not valid_orders(universe, rows)  # the reference agrees: not C1P
    assert not has_consecutive_ones(rows, universe)
    for drop in range(len(rows)):
        assert has_consecutive_ones(rows[:drop] + rows[drop + 1 :], universe)


def test_rejects_elements_outside_the_universe():
    with pytest.raises(ValueError, match="not in the universe"):
        has_consecutive_ones([{1, 9}], range(3))
    with pytest.raises(ValueError):
        PQTree(3).reduce([0, 3])
