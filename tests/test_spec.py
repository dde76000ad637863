"""Decoding a pruned probe tensor into per-dimension kept indices (deploy/spec.py), without a
model."""

import pytest
import torch

from chanprune.deploy.spec import _decode, _probe, place, take
from chanprune.errors import ExportError


def test_a_selection_decodes_to_its_indices_in_physical_order():
    original = torch.zeros(6, 5, 3, 3)
    keep = [[4, 0, 2], [1, 3], None, None]
    got = _decode("w", take(_probe(original), keep), original)
    assert got == keep
    full = place(tuple(original.shape), take(_probe(original), keep), keep)
    kept = place(tuple(original.shape), torch.ones(3, 2, 3, 3, dtype=torch.float64), keep) == 1
    assert int(kept.sum()) == 3 * 2 * 9
    assert torch.equal(full[kept], _probe(original)[kept]) and not full[~kept].any()


def test_unit_kernels_beyond_8192_elements_decode_right():
    """np.unravel_index got these wrong once (numpy 2.4.6); the decoding must not care."""
    original = torch.zeros(256, 64, 1, 1)
    keep = [list(range(0, 256, 3)), list(range(63, -1, -2)), None, None]
    assert _decode("w", take(_probe(original), keep), original) == keep


def test_rows_reading_different_columns_are_no_selection():
    original = torch.zeros(4, 4)
    p = _probe(original)
    mixed = torch.stack([p[0, [0, 1]], p[1, [2, 3]]])  # each row its own columns
    with pytest.raises(ExportError, match="w: the pruned tensor is not a selection"):
        _decode("w", mixed, original)


def test_repeated_or_transformed_entries_have_no_spec():
    original = torch.zeros(4, 4)
    p = _probe(original)
    with pytest.raises(ExportError, match="dim 0 repeats original indices"):
        _decode("w", p[[1, 1]], original)
    with pytest.raises(ExportError, match="transforms this tensor"):
        _decode("w", p * 0.5, original)


def test_grouped_entries_take_and_place_per_block():
    original = torch.arange(4 * 3, dtype=torch.float64).reshape(4, 3) + 1
    keep = [[0, 1, 2, 3], {"groups": [[2, 0], [1, 2]]}]
    pruned = take(original, keep)
    assert pruned.tolist() == [[3, 1], [6, 4], [8, 9], [11, 12]]
    full = place((4, 3), pruned, keep)
    assert full.tolist() == [[1, 0, 3], [4, 0, 6], [0, 8, 9], [0, 11, 12]]


def test_a_tensor_emptied_along_one_dim_decodes_to_no_indices_there():
    """The fuzzer found a per-channel scale whose every channel was removed (seed 244 once
    the attention op joined the menu): an empty tensor is a selection too."""
    original = torch.zeros(3, 4)
    assert _decode("w", take(_probe(original), [[], None]), original) == [[], None]
    assert _decode("s", torch.zeros(0, dtype=torch.float64), torch.zeros(2)) == [[]]
    with pytest.raises(ExportError, match="emptied and resized"):
        _decode("w", torch.zeros(0, 2, dtype=torch.float64), original)
