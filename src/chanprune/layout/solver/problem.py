"""The data types of the layout solver: the problem, one consumer's read, and the plan."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayoutProblem:
    """Choose an order of ``channels`` so that as many ``consumers`` as possible read a slice.

    ``channels`` are the distinct channel ids of one tensor; the order covers exactly these.
    ``consumers[i]`` is the set of channels consumer ``i`` reads (a subset of ``channels``; it may
    be empty and sets may repeat). ``weights[i]`` is the cost per copied channel of consumer ``i``
    (``None``: 1.0 each; weights must be finite and >= 0). Each sequence in ``fixed`` must appear
    as a consecutive run in exactly that order (its reversal is *not* accepted), e.g. a block
    whose internal order is decided elsewhere. Sequences in ``fixed`` may share channels (they
    are then merged into one chain); they must be consistent with each other, otherwise
    :func:`solve_layout` raises a ``ValueError`` naming them.
    """

    channels: tuple[int, ...]
    consumers: tuple[frozenset[int], ...]
    weights: tuple[float, ...] | None = None
    fixed: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class ConsumerRead:
    """How one consumer reads its channels out of the ordered tensor.

    ``kind == "view"``: the channels are positions ``start:stop`` of the order (a free slice),
    ``indices == tuple(range(start, stop))`` and ``copied == 0``; an empty set is the view 0:0.
    ``kind == "gather"``: ``start == stop == -1``, ``indices`` are the positions (ascending) of
    the consumer's channels in the order, and ``copied == len(indices)``.
    """

    kind: str
    start: int
    stop: int
    indices: tuple[int, ...]
    copied: int


@dataclass(frozen=True)
class LayoutPlan:
    """The chosen order, how every consumer reads it, and how good it provably is.

    ``cost`` is ``sum(weight * copied)``. ``lower_bound <= optimum <= cost`` always holds, and
    ``lower_bound == cost`` when ``optimal``. ``method`` is ``"c1p"`` when every consumer is a
    view (the PQ-tree found a zero-copy order), ``"exact"`` when the branch-and-bound search
    finished (the plan is optimal), and ``"heuristic"`` when the search hit ``time_limit``
    (or ``time_limit <= 0``): the plan is then the best one found so far (at least as good as
    the greedy one) and ``optimal`` is False.
    """

    order: tuple[int, ...]
    reads: tuple[ConsumerRead, ...]
    cost: float
    lower_bound: float
    optimal: bool
    method: str
