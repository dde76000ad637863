"""Consecutive-ones tests on top of the PQ-tree, with directed adjacencies and twin compression.

:func:`compress` shrinks the universe to *atoms* (classes of elements that belong to exactly the
same sets) before any PQ-tree is built: real instances shrink to far fewer atoms than channels,
which is what makes the solver fast. :class:`ConstrainedFamily` grows a family of sets that must
all be consecutive, plus directed adjacencies "a immediately before b" (the fixed chains).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from .pqtree import PNODE, QNODE, Node, PQTree


@dataclass(frozen=True)
class Compressed:
    """A problem over element indices, shrunk to atoms (classes of interchangeable elements).

    ``blocks[a]``: the element indices of atom ``a`` in the order they are emitted; atoms are
    numbered by their smallest element. ``sets[j]``: sorted atoms of input set ``j`` (a set is
    a union of atoms). ``pairs``: directed adjacencies (a, b) between consecutive atoms of a
    chain.
    """

    blocks: tuple[tuple[int, ...], ...]
    sets: tuple[tuple[int, ...], ...]
    pairs: tuple[tuple[int, int], ...]


def compress(
    size: int, sets: Sequence[Iterable[int]], chains: Sequence[Sequence[int]] = ()
) -> Compressed:
    """Merge twins of ``0..size-1`` w.r.t. ``sets``; ``chains`` are disjoint fixed sequences.

    An element outside every chain joins the atom of all such elements with the same
    membership; a chain is cut into maximal runs of equal membership, one atom each. Any order
    of the atoms, expanded block by block, keeps exactly the same sets consecutive as before,
    and some optimal order of the elements is such an expansion (moving an element next to a
    twin never breaks a consecutive set), so nothing is lost.
    """
    sigs = _signatures(size, sets)
    blocks, chain_runs = _chain_blocks(chains, sigs)
    in_chain = {e for chain in chains for e in chain}
    loose: dict[tuple[int, ...], list[int]] = {}
    for e in range(size):
        if e not in in_chain:
            loose.setdefault(sigs[e], []).append(e)
    blocks.extend(loose.values())
    rank = sorted(range(len(blocks)), key=lambda b: min(blocks[b]))
    atom_of_block = {b: a for a, b in enumerate(rank)}
    atom_sets: list[list[int]] = [[] for _ in sets]
    for a, b in enumerate(rank):
        for j in sigs[blocks[b][0]]:
            atom_sets[j].append(a)
    pairs = tuple(
        (atom_of_block[x], atom_of_block[y]) for runs in chain_runs for x, y in pairwise(runs)
    )
    return Compressed(
        blocks=tuple(tuple(blocks[b]) for b in rank),
        sets=tuple(tuple(s) for s in atom_sets),
        pairs=pairs,
    )


def _signatures(size: int, sets: Sequence[Iterable[int]]) -> list[tuple[int, ...]]:
    """For each element, the (sorted) indices of the sets holding it."""
    signature: list[list[int]] = [[] for _ in range(size)]
    for j, members in enumerate(sets):
        for e in set(members):
            signature[e].append(j)  # j grows, so each signature comes out sorted
    return [tuple(s) for s in signature]


def _chain_blocks(
    chains: Sequence[Sequence[int]], sigs: list[tuple[int, ...]]
) -> tuple[list[list[int]], list[list[int]]]:
    """Cut each chain into maximal runs of equal signature: (blocks, per chain its blocks)."""
    blocks: list[list[int]] = []
    chain_runs: list[list[int]] = []
    for chain in chains:
        runs: list[int] = []
        for e in chain:
            if runs and sigs[blocks[runs[-1]][-1]] == sigs[e]:
                blocks[runs[-1]].append(e)
            else:
                runs.append(len(blocks))
                blocks.append([e])
        chain_runs.append(runs)
    return blocks, chain_runs


class ConstrainedFamily:
    """A growing family of consecutive sets over ``0..size-1`` plus directed adjacencies.

    ``add`` keeps a set only if the family stays satisfiable and otherwise leaves the family
    as it was, so greedy and conflict searches can probe sets one at a time.

    PQ-trees only know orders up to reversal, so a directed pair (a, b) is first added as the
    set {a, b}; its direction then pins the orientation of one node (the lowest common ancestor
    of a and b, a Q-node or a two-child P-node whose children containing a and b are adjacent).
    Every node's orientation is chosen independently in a frontier, so the directions are
    satisfiable exactly when no node is asked for both orientations.
    """

    def __init__(self, size: int, pairs: Sequence[tuple[int, int]] = ()) -> None:
        self.size = size
        self.pairs = tuple(pairs)
        self.sets: list[Sequence[int]] = []
        self.tree = self._rebuild()

    def _rebuild(self) -> PQTree:
        """A fresh tree holding the pairs and the accepted sets (used to roll back)."""
        tree = PQTree(self.size)
        for a, b in self.pairs:
            if not tree.reduce((a, b)):
                raise ValueError(f"fixed adjacencies are inconsistent at {(a, b)}")
        for members in self.sets:
            accepted = tree.reduce(members)
            assert accepted, "a set accepted before no longer fits"
        self.tree = tree
        if self.pairs and _orientations(tree, self.pairs) is None:
            raise ValueError("fixed adjacencies ask for contradictory directions")
        return tree

    def add(self, members: Sequence[int]) -> bool:
        """Require ``members`` consecutive; False (family unchanged) if that is impossible."""
        if not self.tree.reduce(members):
            return False
        if self.pairs and _orientations(self.tree, self.pairs) is None:
            self._rebuild()  # the tree accepted the set but a direction broke: roll back
            return False
        self.sets.append(members)
        return True

    def fits(self, members: Sequence[int]) -> bool:
        """Whether ``members`` could be added; the family is left as it was either way."""
        if not self.add(members):
            return False
        self.sets.pop()
        self._rebuild()
        return True

    def order(self) -> list[int]:
        """A frontier honouring every direction; free choices follow the element numbering.

        P-node children are sorted by their smallest leaf and unconstrained Q-nodes are read
        so that their first child has the smaller smallest leaf: the order stays as close to
        ``0..size-1`` as the constraints allow.
        """
        demands = _orientations(self.tree, self.pairs) if self.pairs else {}
        assert demands is not None
        low = _smallest_leaf(self.tree)

        def arrange(node: Node) -> list[Node]:
            kids = node.kids()
            if node in demands:
                return kids if demands[node] else kids[::-1]
            if node.kind == PNODE:
                return sorted(kids, key=low.__getitem__)
            return kids if low[kids[0]] < low[kids[-1]] else kids[::-1]

        return self.tree.frontier(arrange)


def _orientations(tree: PQTree, pairs: Iterable[tuple[int, int]]) -> dict[Node, bool] | None:
    """The orientation each directed pair needs (node -> read as stored?), None on conflict."""
    demands: dict[Node, bool] = {}
    for a, b in pairs:
        node, below_a, below_b = tree.lca_children(a, b)
        kids = node.kids()
        assert node.kind == QNODE or len(kids) == 2, "pair was not reduced"
        forward = kids.index(below_a) < kids.index(below_b)
        if demands.setdefault(node, forward) != forward:
            return None
    return demands


def _smallest_leaf(tree: PQTree) -> dict[Node, int]:
    """Smallest leaf value under every node (post-order over the tree)."""
    low: dict[Node, int] = {}
    if tree.root is None:
        return low
    stack: list[tuple[Node, bool]] = [(tree.root, False)]
    while stack:
        node, expanded = stack.pop()
        if node.children is None:
            low[node] = node.value
        elif expanded:
            low[node] = min(low[c] for c in node.children)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in node.children)
    return low


def _contiguous(positions: Sequence[int]) -> bool:
    """True when distinct ``positions`` form a run (vacuously for an empty set)."""
    places = set(positions)
    return not places or max(places) - min(places) + 1 == len(places)


def _universe(universe: Iterable[Hashable]) -> list[Hashable]:
    """The universe as a list: given order, or sorted when it is an unordered set."""
    if isinstance(universe, (set, frozenset)):
        try:
            return sorted(universe)  # type: ignore[type-var]
        except TypeError:
            return list(universe)
    elems = list(universe)
    if len(set(elems)) != len(elems):
        raise ValueError("universe has repeated elements")
    return elems


def consecutive_order(
    sets: Iterable[Iterable[Hashable]], universe: Iterable[Hashable]
) -> list[Hashable] | None:
    """An order of ``universe`` in which every set is consecutive, or None if none exists.

    Each set must be a subset of ``universe`` (ValueError otherwise). When the universe's own
    order (sorted for a set) works it is returned; otherwise free choices follow it.
    """
    elems = _universe(universe)
    index = {e: i for i, e in enumerate(elems)}
    idx_sets = []
    for members in sets:
        members = list(members)
        missing = [e for e in members if e not in index]
        if missing:
            raise ValueError(f"set elements {missing!r} are not in the universe")
        idx_sets.append([index[e] for e in members])
    if all(_contiguous(s) for s in idx_sets):
        return elems
    comp = compress(len(elems), idx_sets)
    family = ConstrainedFamily(len(comp.blocks))
    for atoms in comp.sets:
        if not family.add(atoms):
            return None
    return [elems[e] for a in family.order() for e in comp.blocks[a]]


def has_consecutive_ones(sets: Iterable[Iterable[Hashable]], universe: Iterable[Hashable]) -> bool:
    """True when some order of ``universe`` makes every set consecutive (PQ-tree test)."""
    return consecutive_order(sets, universe) is not None
