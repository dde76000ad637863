"""PQ-trees (Booth & Lueker 1976): all orders of 0..n-1 in which given sets are consecutive.

A PQ-tree's leaves are the elements. A *P-node* lets its children appear in any order, a
*Q-node* fixes the order of its children up to reversal. The *frontier* (leaves read left to
right) of any tree obtained by such permutations/reversals is a valid order, and every valid
order is such a frontier. The tree starts as one P-node over all leaves (no constraint);
:meth:`PQTree.reduce` adds the constraint "this set is consecutive" with the paper's templates.
:class:`PQTree` says where this implementation differs from the paper (for simplicity in Python,
same results).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

LEAF, PNODE, QNODE = "leaf", "P", "Q"
_FULL, _PARTIAL = 1, 2


class Node:
    """A PQ-tree node. ``children``: dict (P-node, keys in order), list (Q-node), None (leaf)."""

    __slots__ = ("children", "kind", "parent", "value")

    def __init__(self, kind: str, value: int = -1) -> None:
        self.kind = kind
        self.value = value
        self.parent: Node | None = None
        self.children: dict[Node, None] | list[Node] | None
        self.children = {} if kind == PNODE else [] if kind == QNODE else None

    def kids(self) -> list[Node]:
        """The children in their stored order (empty for a leaf)."""
        return list(self.children) if self.children is not None else []

    def __repr__(self) -> str:
        if self.kind == LEAF:
            return f"L{self.value}"
        inner = " ".join(repr(c) for c in self.kids())
        return f"P({inner})" if self.kind == PNODE else f"Q[{inner}]"


def _new_p(nodes: Sequence[Node]) -> Node:
    """A P-node over ``nodes`` (at least two)."""
    node = Node(PNODE)
    for child in nodes:
        node.children[child] = None
        child.parent = node
    return node


def _new_q(nodes: Sequence[Node]) -> Node:
    """A Q-node over ``nodes`` in this order (at least three once the reduction is done)."""
    node = Node(QNODE)
    node.children = list(nodes)
    for child in nodes:
        child.parent = node
    return node


def _group(nodes: Sequence[Node]) -> Node | None:
    """One node standing for ``nodes`` in any order: none, the node itself, or a new P-node."""
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else _new_p(nodes)


class _Pertinent:
    """The pertinent subtree of one reduction: its nodes bottom-up and their pertinent kids."""

    __slots__ = ("details", "kids", "labels", "n_leaves", "order", "root")

    def __init__(
        self, order: list[Node], kids: dict[Node, list[Node]], root: Node, n_leaves: int
    ) -> None:
        self.order = order  # the leaves, then parents after children, ends with the root
        self.n_leaves = n_leaves
        self.kids = kids  # node -> its pertinent children
        self.root = root  # the deepest node whose subtree holds every element of the set
        self.labels: dict[Node, int] = dict.fromkeys(order[:n_leaves], _FULL)  # leaves: full
        self.details: dict[Node, tuple[int, int, bool]] = {}

    def split(self, node: Node) -> tuple[list[Node], list[Node]]:
        """The pertinent children of ``node`` split into (full, partial)."""
        full, partial = [], []
        for child in self.kids[node]:
            (full if self.labels[child] == _FULL else partial).append(child)
        return full, partial


class PQTree:
    """The set of all orders of ``0..size-1`` in which every reduced set is consecutive.

    Differences from the paper, all for simplicity in Python (same results):

    * every node keeps a parent pointer (Booth-Lueker keep them only at Q-node ends to be
      linear); P-node children are an insertion-ordered dict (O(1) removal), Q-node children a
      list;
    * :meth:`reduce` works in two passes: :meth:`_classify` checks that a template applies at
      every pertinent node *without changing anything*, then :meth:`_apply` rewrites. A failed
      reduction therefore leaves the tree untouched, which the search relies on (add a set,
      keep it if it fits) instead of copying the tree;
    * a partial non-root node is not materialised as a Q-node: its template returns the list of
      children the Q-node would have, and the parent splices that list (a partial child is
      always merged into its parent's new Q-node, so it would be discarded anyway).

    Cost per reduction is the size of the pertinent subtree plus the depth of its root plus the
    length of the Q-nodes it touches -- small in practice, not the paper's strict linear bound.
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"PQTree size must be >= 0, got {size}")
        self.size = size
        self.leaves = [Node(LEAF, i) for i in range(size)]
        self.root: Node | None = None
        if size == 1:
            self.root = self.leaves[0]
        elif size > 1:
            self.root = _new_p(self.leaves)

    # ------------------------------------------------------------------ reduction
    def reduce(self, elements: Iterable[int]) -> bool:
        """Require ``elements`` to be consecutive. False (tree unchanged) if impossible.

        The part of the tree above the set's leaves (its *pertinent subtree*) is rewritten with
        the classic templates:

        * non-root node, *singly partial* result (pertinent leaves must end up at one end of the
          node's frontier): P3/P5 for P-nodes, Q2 for Q-nodes;
        * pertinent root, *doubly partial* result allowed (pertinent leaves anywhere, but
          contiguous): P2/P4/P6 for P-nodes, Q2/Q3 for Q-nodes.

        Labels: a node is FULL when all its leaves are in the set, PARTIAL when only some are (a
        partial node is, after its template, a sequence "empty side ... full side"), EMPTY
        otherwise.
        """
        members = sorted(set(elements))
        if members and (members[0] < 0 or members[-1] >= self.size):
            raise ValueError(f"elements must lie in 0..{self.size - 1}, got {members}")
        if len(members) <= 1 or len(members) == self.size:
            return True  # always consecutive: nothing to record
        pert = self._bubble([self.leaves[i] for i in members])
        if not self._classify(pert):
            return False
        self._apply(pert)
        return True

    def _bubble(self, leaves: list[Node]) -> _Pertinent:
        """Find the pertinent subtree: every ancestor of the set's leaves, bottom-up.

        First walk up from each leaf, recording each node as a pertinent child of its parent
        and stopping at a parent already seen (its ancestors are recorded). Then count the
        set's leaves under each node from the bottom (a node is ready once all its pertinent
        children are): the first node whose count is the whole set is the pertinent root.
        The leaves (at least two) come first in the order; the hot loops touch each leaf once.
        """
        kids: dict[Node, list[Node]] = {}
        for leaf in leaves:
            node, parent = leaf, leaf.parent
            while parent is not None:
                siblings = kids.get(parent)
                if siblings is not None:
                    siblings.append(node)
                    break
                kids[parent] = [node]
                node, parent = parent, parent.parent
        pending = {node: len(children) for node, children in kids.items()}
        count: dict[Node, int] = {}
        queue: deque[Node] = deque()
        for leaf in leaves:
            parent = leaf.parent
            count[parent] = count.get(parent, 0) + 1
            left = pending[parent] - 1
            pending[parent] = left
            if not left:
                queue.append(parent)
        order, total = list(leaves), len(leaves)
        while True:
            node = queue.popleft()
            order.append(node)
            here = count[node]
            if here == total:
                return _Pertinent(order, kids, node, total)
            parent = node.parent
            count[parent] = count.get(parent, 0) + here
            left = pending[parent] - 1
            pending[parent] = left
            if not left:
                queue.append(parent)

    def _classify(self, pert: _Pertinent) -> bool:
        """Label every pertinent node and check that its template applies (no changes)."""
        for node in pert.order[pert.n_leaves :]:  # the leaves are labelled full already
            full, partial = pert.split(node)
            if len(full) == len(node.children):
                pert.labels[node] = _FULL
                continue
            is_root = node is pert.root
            if node.kind == PNODE:
                # Each partial child brings its full leaves to one end. Below the root the
                # result must be full at one end only (the parent's run continues there),
                # so one partial child at most; the root may hold two, one at each end.
                if len(partial) > (2 if is_root else 1):
                    return False
            else:
                detail = _q_shape(node, pert, is_root)
                if detail is None:
                    return False
                pert.details[node] = detail
            pert.labels[node] = _PARTIAL
        return True

    def _apply(self, pert: _Pertinent) -> None:
        """Rewrite the pertinent subtree bottom-up with the templates chosen by _classify."""
        spliced: dict[Node, list[Node]] = {}  # partial non-root node -> its new child sequence
        for node in pert.order[pert.n_leaves :]:  # leaves are full: unchanged
            if pert.labels[node] == _FULL:
                continue  # a full node is unchanged (a full root means nothing to do)
            if node is pert.root:
                if node.kind == PNODE:
                    self._root_p(node, pert, spliced)
                else:
                    _root_q(node, pert, spliced)
            elif node.kind == PNODE:
                spliced[node] = _partial_p(node, pert, spliced)
            else:
                spliced[node] = _partial_q(node, pert, spliced)

    def _root_p(self, node: Node, pert: _Pertinent, spliced: dict[Node, list[Node]]) -> None:
        """Templates P2, P4, P6: gather the full children (and partial ones) into one child.

        P2 (no partial child): the full children become one new P-node child. P4/P6 (one or
        two partial children): a Q-node "partial1, full..., reversed partial2" replaces them.
        A root left with a single child is replaced by that child.
        """
        full, partial = pert.split(node)
        for child in pert.kids[node]:
            del node.children[child]
        full_part = _group(full)
        if not partial:
            new = full_part
        else:
            seq = list(spliced[partial[0]])
            if full_part is not None:
                seq.append(full_part)
            if len(partial) == 2:
                seq.extend(reversed(spliced[partial[1]]))
            new = _new_q(seq)
        node.children[new] = None
        new.parent = node
        if len(node.children) == 1:
            self._replace(node, new)

    def _replace(self, old: Node, new: Node) -> None:
        """Put ``new`` where ``old`` is in the tree."""
        parent = old.parent
        new.parent = parent
        if parent is None:
            self.root = new
        elif parent.kind == PNODE:
            del parent.children[old]
            parent.children[new] = None
        else:
            parent.children[parent.children.index(old)] = new

    # ------------------------------------------------------------------ reading the tree
    def frontier(self, arrange: Callable[[Node], Iterable[Node]] | None = None) -> list[int]:
        """The leaves left to right, each internal node's children ordered by ``arrange``.

        ``arrange(node)`` must return the node's children in a legal order (any permutation
        for a P-node, stored or reversed order for a Q-node); default: stored order.
        """
        if self.root is None:
            return []
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            if node.kind == LEAF:
                out.append(node.value)
                continue
            kids = list(arrange(node)) if arrange is not None else node.kids()
            stack.extend(reversed(kids))
        return out

    def lca_children(self, a: int, b: int) -> tuple[Node, Node, Node]:
        """The lowest common ancestor of leaves ``a != b`` and its children above each."""
        below: dict[Node, Node] = {}  # ancestor of a -> its child on the path to a
        node = self.leaves[a]
        while node.parent is not None:
            below[node.parent] = node
            node = node.parent
        node = self.leaves[b]
        while node.parent not in below:
            node = node.parent
        return node.parent, below[node.parent], node


def _positions(node: Node, members: list[Node]) -> list[int]:
    """Sorted positions of ``members`` among the Q-node's children."""
    children = node.children
    if len(members) <= 4:
        return sorted(children.index(m) for m in members)
    where = {child: i for i, child in enumerate(children)}
    return sorted(where[m] for m in members)


def _q_shape(node: Node, pert: _Pertinent, is_root: bool) -> tuple[int, int, bool] | None:
    """Check templates Q2/Q3 on a non-full Q-node; return (lo, hi, reverse) or None.

    The pertinent children must be consecutive (positions lo..hi) with partial children only
    at the ends of that run. A non-root node's result must be singly partial, so the run must
    also touch an end of the node and its partial child face inwards; ``reverse`` says that
    the node must be read backwards to get "empty side ... full side".
    """
    _, partial = pert.split(node)
    pos = _positions(node, pert.kids[node])
    lo, hi = pos[0], pos[-1]
    if hi - lo + 1 != len(pos) or len(partial) > (2 if is_root else 1):
        return None
    ends = _positions(node, partial) if partial else []
    if any(p not in (lo, hi) for p in ends):
        return None
    if is_root:
        if len(partial) == 2 and lo == hi:
            return None
        return lo, hi, False
    last = len(node.children) - 1
    if hi == last and (not ends or ends[0] == lo):
        return lo, hi, False
    if lo == 0 and (not ends or ends[0] == hi):
        return lo, hi, True
    return None


def _partial_p(node: Node, pert: _Pertinent, spliced: dict[Node, list[Node]]) -> list[Node]:
    """Templates P3/P5: a partial P-node becomes "empty part, partial child, full part".

    The empty children stay together under ``node`` itself (kept as a P-node when two or
    more remain), the full children under a new P-node; the partial child, if any, is
    already a sequence "empty ... full" and goes in between.
    """
    full, partial = pert.split(node)
    for child in pert.kids[node]:
        del node.children[child]
    seq: list[Node] = []
    if len(node.children) == 1:
        seq.append(next(iter(node.children)))
    elif node.children:
        seq.append(node)
    if partial:
        seq.extend(spliced[partial[0]])
    full_part = _group(full)
    if full_part is not None:
        seq.append(full_part)
    return seq


def _partial_q(node: Node, pert: _Pertinent, spliced: dict[Node, list[Node]]) -> list[Node]:
    """Template Q2: read the Q-node so that its full end is last, splice its partial child."""
    lo, hi, reverse = pert.details[node]
    children = node.children
    if reverse:
        children = children[::-1]
        lo = len(children) - 1 - hi
    first = children[lo]
    if pert.labels[first] == _PARTIAL:
        return children[:lo] + spliced[first] + children[lo + 1 :]
    return list(children)


def _root_q(node: Node, pert: _Pertinent, spliced: dict[Node, list[Node]]) -> None:
    """Template Q3: splice the partial children at both ends of the pertinent run.

    The left one is read "empty ... full" and the right one reversed, so the full leaves of
    both meet the full children in the middle.
    """
    lo, hi, _ = pert.details[node]
    children = node.children
    left, right = children[lo], children[hi]
    new_left = spliced[left] if pert.labels[left] == _PARTIAL else [left]
    new_right = spliced[right][::-1] if pert.labels[right] == _PARTIAL else [right]
    node.children = (
        children[:lo] + new_left + children[lo + 1 : hi] + new_right + children[hi + 1 :]
    )
    for child in (*new_left, *new_right):
        child.parent = node
