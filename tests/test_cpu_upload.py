"""plan()'s host-to-device staging (csrc/cpu/upload.cpp), exercised on the host: the same
gathering into one block that a GPU plan sends, with the host as the destination device."""
import torch

from torch_flashinfer_ops import _C


def _arrays():
    return [torch.arange(5, dtype=torch.int32), torch.arange(40, 77, dtype=torch.int64),
            torch.arange(100, 130, dtype=torch.int32)[::2], torch.tensor([7, -3], dtype=torch.int32)]


def test_staged_results_hold_the_sources_as_int32():
    sources = _arrays()
    fixed = torch.full((37,), -1, dtype=torch.int32)
    destinations = [None, fixed, None, None]
    results = _C.upload(sources, destinations, torch.device("cpu"), False, True)
    for src, res in zip(sources, results):
        assert res.dtype == torch.int32
        assert torch.equal(res, src.to(torch.int32))
    assert results[1] is fixed or results[1].data_ptr() == fixed.data_ptr()


def test_fresh_homes_share_one_block_at_128_byte_boundaries():
    sources = _arrays()
    results = _C.upload(sources, [None, None, None, None], torch.device("cpu"), False, True)
    base = results[0].data_ptr()
    offsets = [(r.data_ptr() - base) // 4 for r in results]
    assert offsets == [0, 32, 32 + 64, 32 + 64 + 32]  # lengths 5, 37, 15, 2 rounded up to 32
    assert all(r.untyped_storage().data_ptr() == results[0].untyped_storage().data_ptr() for r in results)


def test_without_staging_arrays_are_used_or_copied_as_they_are():
    src = torch.arange(9, dtype=torch.int32)
    dest = torch.zeros(9, dtype=torch.int32)
    results = _C.upload([src, src], [None, dest], torch.device("cpu"), False, False)
    assert results[0].data_ptr() == src.data_ptr()
    assert torch.equal(dest, src) and results[1].data_ptr() == dest.data_ptr()


def test_a_destination_of_another_length_is_refused():
    import pytest

    with pytest.raises(ValueError, match="destination holds 3 entries, source 9"):
        _C.upload([torch.arange(9, dtype=torch.int32)], [torch.zeros(3, dtype=torch.int32)],
                  torch.device("cpu"), False, True)


def test_empty_arrays_take_no_room_and_leave_the_others_in_place():
    # A batch whose requests have no pages sends an empty page-id array.
    sources = [torch.arange(3, dtype=torch.int32), torch.empty(0, dtype=torch.int32),
               torch.empty(0, dtype=torch.int64), torch.tensor([4, 5], dtype=torch.int32)]
    destinations = [None, None, torch.empty(0, dtype=torch.int32), None]
    results = _C.upload(sources, destinations, torch.device("cpu"), False, True)
    assert [r.numel() for r in results] == [3, 0, 0, 2]
    assert torch.equal(results[0], sources[0]) and torch.equal(results[3], sources[3])
    assert (results[3].data_ptr() - results[0].data_ptr()) // 4 == 32
