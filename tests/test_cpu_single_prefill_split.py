"""single_prefill's kv split policy (csrc/include/single_prefill_split.h, the host arithmetic
the CUDA/HIP launch runs; exposed as _C.single_prefill_split): which launches are split, into
how many chunks. Host only; runs everywhere. The AMD emulated tier runs split launches and their
merge against the float64 reference; the GPU tier runs the launches this policy splits, with the
split on and off."""
import pytest

from torch_flashinfer_ops import _C

SLOTS = 264  # 132 multiprocessors x 2 resident blocks: NVIDIA H100/H200, head_dim 128


def split(qo_len, kv_len, causal, hq=32, hkv=8, window_left=-1, slots=SLOTS, max_splits=None,
          tile_rows=128, kv_tile=64):
    args = (qo_len, kv_len, hq, hkv, tile_rows, kv_tile, causal, window_left, slots)
    return _C.single_prefill_split(*args) if max_splits is None else _C.single_prefill_split(*args, max_splits)


def longest_tiles(qo_len, kv_len, causal, group, tile_rows=128, kv_tile=64, window_left=-1):
    """The most K/V tiles any q tile sees (queries aligned to the end of the kv)."""
    rows, delta, best = qo_len * group, kv_len - qo_len, 0
    for t in range(-(-rows // tile_rows)):
        first, last = t * tile_rows // group, (min((t + 1) * tile_rows, rows) - 1) // group
        lo, hi = 0, kv_len
        if causal:
            hi = min(hi, last + delta + 1)
        if window_left >= 0:
            lo = max(lo, first + delta - window_left)
        best = max(best, -(-(hi - lo) // kv_tile) if hi > lo else 0)
    return best


@pytest.mark.parametrize("qo_len, kv_len, causal", [
    (1024, 1024, True), (1024, 1024, False), (512, 512, False), (256, 256, True), (4096, 4096, True),
    (16384, 16384, False)])
def test_launches_that_fill_the_gpu_are_not_split(qo_len, kv_len, causal):
    # 8 kv heads x (qo_len * 4 / 128) q tiles: at least 64 blocks, a quarter of the slots or more.
    assert split(qo_len, kv_len, causal) == (1, 0)


def test_few_queries_against_a_long_kv_are_split_to_fill_a_wave():
    # 16 tokens x 4 heads = one 64-row tile per kv head: 8 blocks, each of 128 K/V tiles.
    splits, chunk = split(16, 8192, True)
    assert splits == 32 and chunk == 4  # 256 blocks (of 264 slots), chunks of 4 tiles
    # 128 tokens: 4 tiles x 8 heads = 32 blocks; 264 // 32 = 8 chunks of 8 tiles.
    assert split(128, 4096, False) == (8, 8)


def test_chunks_are_never_shorter_than_four_kv_tiles():
    # One block per kv head, 6 K/V tiles: two chunks would be of 3.
    assert split(1, 6 * 64, False) == (1, 0)
    splits, chunk = split(1, 8 * 64, False)
    assert (splits, chunk) == (2, 4)


def test_max_splits_bounds_and_one_turns_the_split_off():
    assert split(16, 8192, True, max_splits=1) == (1, 0)
    assert split(16, 8192, True, max_splits=5) == (5, 26)
    assert split(16, 1 << 20, True)[0] == 32  # the policy's own bound


@pytest.mark.parametrize("qo_len, kv_len, causal, hq, hkv, window_left", [
    (16, 8192, True, 32, 8, -1), (100, 5000, True, 6, 2, -1), (3, 3000, False, 4, 4, 700),
    (40, 20000, True, 64, 8, 1000), (1, 70000, False, 1, 1, -1)])
def test_chunks_cover_the_longest_tile(qo_len, kv_len, causal, hq, hkv, window_left):
    splits, chunk = split(qo_len, kv_len, causal, hq=hq, hkv=hkv, window_left=window_left)
    n = longest_tiles(qo_len, kv_len, causal, hq // hkv, window_left=window_left)
    assert splits > 1, (splits, n)
    assert chunk >= 4 and -(-n // chunk) == splits  # the longest tile has exactly `splits` chunks
    tiles = -(-qo_len * (hq // hkv) // 128) * hkv
    assert tiles * splits <= SLOTS  # one wave


def test_other_tile_shapes_and_devices():
    # head_dim 256 on NVIDIA: 64-row q tiles, 32-row K/V tiles; an AMD device of 304 CUs x 2.
    splits, chunk = split(32, 4096, True, tile_rows=64, kv_tile=32)
    assert (splits, chunk) == (16, 8)  # 16 blocks: 264 // 16 = 16 chunks of 128 / 16 tiles
    # MHA, 32 blocks of 256 K/V tiles: a wave of 264 slots holds 8 chunks each, of 608 slots 19.
    assert split(32, 16384, True, hq=32, hkv=32) == (8, 32)
    assert split(32, 16384, True, hq=32, hkv=32, slots=608) == (19, 14)


def test_invalid_geometry_is_refused():
    with pytest.raises(RuntimeError, match="invalid geometry"):
        _C.single_prefill_split(16, 100, 6, 4, 128, 64, True, -1, SLOTS, 8)  # 6 heads over 4
