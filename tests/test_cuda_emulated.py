"""NVIDIA emulated tier: the CUDA backend's decode and prefill kernels run on the host under the
warp32 emulation (tests/cuda_emulation/), against a float64 reference.

The kernels are built for the host with the CUDA toolkit's fp16/bf16 headers, as sm_80 and as
sm_90 (stmatrix stores, the e4m3 conversion instruction), taking the code paths that only
NVIDIA builds take: two K/V stages filled by asynchronous copies (which land only when their
group is waited for), the tensor-core decode's wide shape with tasks of many tiles, FP8 tiles
read as 8-bit fragments, split requests merged inside the decode launch by arrival counters,
and the paged prefill kernels' shared row-offset table. What this proves: that code computes
what the reference computes, given mma.sync, ldmatrix, stmatrix and cp.async as the PTX ISA
defines them. Where kernel variants are under evaluation (csrc/hip/kernels/kernel_variants.h),
the prefill kernels are built a third time, as sm_90 with every one on. It does not prove timing,
memory ordering between blocks (they run one after another), or the PTX the backend emits: the GPU
tier runs that.

Skips without a C++20 host compiler or the CUDA headers unless TFO_REQUIRE_COMPILERS=1 (CI),
where a missing one fails.
"""
import ctypes
import glob
import os
import shutil
import sys
import subprocess
from pathlib import Path

import pytest
import torch

import torch_flashinfer_ops as flashinfer

try:
    from . import reference as ref
    from . import test_amd_emulated as amd_tier
    from .emulated_matrix import axis, matrix
    from .plan_layout import decode_plan_size
except ImportError:
    import reference as ref
    import test_amd_emulated as amd_tier
    from emulated_matrix import axis, matrix
    from plan_layout import decode_plan_size

REPO = Path(__file__).resolve().parents[1]
EMULATION = REPO / "tests" / "cuda_emulation"
# The decode and prefill cases, their seeds, FP8 encodings and checks are the AMD tier's.
FP8, DECODE_CASES, _seed = amd_tier.FP8, amd_tier.DECODE_CASES, amd_tier._seed
_assert_decode_matches = amd_tier._assert_decode_matches
scaled_reference_kv = amd_tier.scaled_reference_kv
FAMILIES = {"simt": 0, "mma": 1, "mma-wide": 2, "simt-four-blocks": 3, "mma-head-columns": 4, "mma-wide-words": 5}
# The families that take every decode case: the head columns take FP8 caches and groups of at
# most 8 only (test_fp8_groups_with_head_columns_under_cuda_emulation, the several-task blocks),
# the merge by words plans of one task a block (test_wide_shape_merges_by_words_under_cuda_emulation).
CASE_FAMILIES = [f for f in FAMILIES if f not in ("mma-head-columns", "mma-wide-words")]
# The architectures whose backend paths the host builds take: sm_80's (no __CUDA_ARCH__), and
# sm_90's (stmatrix stores, the e4m3 conversion instruction; TFO_EMU32_ARCH). Also the target
# names the AMD tier's prefill tests are given for these drivers. The sm_80 build lands cp.async
# copies at their wait (the latest the hardware may), the sm_90 build at their commit (the
# earliest): a read before its wait fails the first, a stage overwritten while still read the
# second.
ARCHS = {"cuda-sm80": (), "cuda-sm90": ("-DTFO_EMU32_ARCH=900", "-DTFO_EMU32_COPIES_LAND_AT_COMMIT")}


def kernel_variant_defines(family):
    """-D switches of every kernel variant under evaluation (csrc/hip/kernels/kernel_variants.h)
    that changes `family`'s kernels (kernel_variants.family)."""
    sys.path.insert(0, str(REPO / "tools"))
    import kernel_variants

    return tuple(kernel_variants.define(name) for name in kernel_variants.known()
                 if kernel_variants.family(name) == family)


# The decode and prefill drivers, and, where a family's variants are under evaluation, the sm_90
# one again with each of them on (the build an A/B against the default kernels times): a variant
# is timed on a GPU only once it computes what the reference computes here. A family without
# variants would build the default kernels again, so it gets no variants build.
PREFILL_BUILDS = dict(ARCHS)
DECODE_BUILDS = dict(ARCHS)
for _builds, _family in ((PREFILL_BUILDS, "prefill"), (DECODE_BUILDS, "decode")):
    _defines = kernel_variant_defines(_family)
    if _defines:
        _builds["cuda-sm90-variants"] = ARCHS["cuda-sm90"] + _defines


def _missing(what):
    if os.environ.get("TFO_REQUIRE_COMPILERS") == "1":
        pytest.fail(f"{what} is required for the NVIDIA emulated tier (TFO_REQUIRE_COMPILERS=1)")
    pytest.skip(f"{what} not found")


def _cuda_include():
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
             *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(os.path.realpath(nvcc)).parents[1]))
    for root in roots:
        if root and (Path(root) / "include" / "cuda_fp16.h").is_file():
            return Path(root) / "include"
    _missing("the CUDA toolkit's headers (cuda_fp16.h)")


def _build(out_dir, source, arch, flags=None):
    """Builds an emulation driver for the host as a shared library and loads it (flags: the
    build's defines, ARCHS[arch] unless given)."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        _missing("a host C++ compiler (g++)")
    include = _cuda_include()
    lib = out_dir / f"{Path(source).stem}_{arch}.so"
    # Hidden visibility: each library keeps its own instantiations of the kernel templates.
    cmd = [cxx, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-fvisibility=hidden",
           *(ARCHS[arch] if flags is None else flags),
           "-I", str(REPO / "csrc" / "hip"), "-I", str(EMULATION), "-I", str(include),
           str(EMULATION / source), "-o", str(lib)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr[-4000:]}"
    return ctypes.CDLL(str(lib))


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_emulation")


@pytest.fixture(scope="module")
def decode_libs(build_dir):
    return amd_tier.build_concurrently({name: (_build, build_dir, "decode_emulated.cpp", name, flags)
                                        for name, flags in DECODE_BUILDS.items()})


@pytest.fixture(scope="module")
def prefill_libs(build_dir):
    """The CUDA prefill drivers, keyed as the AMD tier's prefill tests take their libraries."""
    return amd_tier.build_concurrently({name: (_build, build_dir, "prefill_emulated.cpp", name, flags)
                                        for name, flags in PREFILL_BUILDS.items()})


def _emulated_batch_decode(lib, family, q, paged, kv_layout, kv_chunk_size, *, sm_scale, logits_soft_cap=0.0,
                           window_left=-1, k_scale=1.0, v_scale=1.0, num_blocks=4, fused_merge=False):
    """Plans with the library's planner (a decode plan for a grid of num_blocks, as plan()
    makes it), then runs the family's kernel as the NVIDIA bindings launch it: split requests
    merge inside the launch (fused_merge) or in the merge launch after it. Returns (out, lse,
    partial rows); out and lse are NaN-poisoned before the run."""
    k_cache, v_cache = paged.cache
    batch, hq, d = q.shape
    tok, head = (1, 2) if kv_layout == "NHD" else (2, 1)
    hkv = k_cache.shape[head]
    kv_kind, factor = FP8.get(k_cache.dtype, (0, 1.0))
    plan = torch.full((1 << 16,), -7, dtype=torch.int32)
    empty = torch.empty(0, dtype=torch.int32)
    valid, *_ = flashinfer._C.plan_host(empty, torch.tensor(paged.seq_lens, dtype=torch.int32), plan, 1, hkv, 1,
                                        num_blocks, kv_chunk_size, True, 0, False, -1, paged.indptr.to(torch.int32))
    assert valid
    rows = int(plan[4])  # plan_info header: partial rows
    partial_o = torch.full((max(rows, 1), hq, d), float("nan"))
    partial_lse = torch.full((max(rows, 1), hq), float("nan"))
    # One counter per (request, kv head, head slice); a head slice holds at least one head. The
    # merge by words takes its words after the counters' slots, as the bindings lay them out.
    words = rows * hq * d if family == "mma-wide-words" else 0
    counter_slots = flashinfer._C.SPLIT_COUNTER_SLOTS if words else batch * hq
    counters = torch.zeros(counter_slots + 2 * words, dtype=torch.int32) if fused_merge else None
    out = torch.full((batch, hq, d), float("nan"), dtype=q.dtype)
    lse = torch.full((batch, hq), float("nan"))
    q_scale, cap_log2 = amd_tier._decode_scales(sm_scale, logits_soft_cap, k_scale, factor)
    i32, f32, ptr = ctypes.c_int, ctypes.c_float, lambda t: ctypes.c_void_p(t.data_ptr())
    status = lib.tfo_emu32_batch_decode(
        i32(0 if q.dtype == torch.float16 else 1), i32(kv_kind), i32(d), i32(FAMILIES[family]), i32(batch), i32(hq),
        i32(hkv), i32(num_blocks), ptr(q), i32(q.stride(0)), i32(q.stride(1)), ptr(out), i32(out.stride(0)),
        i32(out.stride(1)), ptr(lse), ptr(partial_o), ptr(partial_lse),
        ptr(counters) if fused_merge else ctypes.c_void_p(0), ptr(k_cache), ptr(v_cache), i32(k_cache.stride(0)),
        i32(k_cache.stride(tok)), i32(k_cache.stride(head)), i32(v_cache.stride(0)), i32(v_cache.stride(tok)),
        i32(v_cache.stride(head)), i32(k_cache.shape[tok]), ptr(paged.indptr), ptr(paged.indices),
        ptr(paged.last_page_len), ptr(plan), i32(decode_plan_size(plan)), i32(window_left), f32(q_scale),
        f32(cap_log2), f32(v_scale * factor))
    assert status == 0
    if fused_merge:
        assert not counters[:counter_slots].any(), "the merging blocks must leave the arrival counters at zero"
        assert not counters[counter_slots:].any(), "the merging threads must leave every word they read at zero"
    return out, lse, rows


def _case(kv_lens, page_size, hq, hkv, d, q_dtype, kv_dtype, layout, seed):
    torch.manual_seed(seed)
    ks = [torch.randn(n, hkv, d).to(kv_dtype) for n in kv_lens]
    vs = [torch.randn(n, hkv, d).to(kv_dtype) for n in kv_lens]
    paged = ref.build_paged_kv(ks, vs, page_size, kv_layout=layout, single_tensor=False)
    q = torch.randn(len(kv_lens), hq, d).to(q_dtype)
    return q, ks, vs, paged


# Each case and family merged both ways and on every build; the two rotate (emulated_matrix).
@pytest.mark.parametrize("case,family,fused_merge,arch",
                         matrix(axis(DECODE_CASES), axis(CASE_FAMILIES),
                                axis([False, True], ["merge-launch", "in-launch"]), axis(DECODE_BUILDS)))
def test_batch_decode_under_cuda_emulation(decode_libs, case, family, fused_merge, arch):
    """NVIDIA's decode kernels on a shuffled paged cache with partly filled last pages and
    split requests (soft cap, sliding window, FP8 scales), merged inside the launch or after
    it, against the float64 reference: out and lse."""
    kv_lens, page_size, hq, hkv, d, q_dtype, kv_dtype, layout, chunk = DECODE_CASES[case]
    q, ks, vs, paged = _case(kv_lens, page_size, hq, hkv, d, q_dtype, kv_dtype, layout, _seed(case, family, arch))
    k_scale, v_scale, kk, vv = scaled_reference_kv(ks, vs, kv_dtype, 0.7, 1.9)
    cap = 20.0 if case == "bf16-mha-p1-hnd" else 0.0
    window = 40 if case == "f16-gqa4-p16-split" else -1
    sm_scale = d ** -0.5
    out, lse, rows = _emulated_batch_decode(decode_libs[arch], family, q, paged, layout, chunk, sm_scale=sm_scale,
                                            logits_soft_cap=cap, window_left=window, k_scale=k_scale,
                                            v_scale=v_scale, fused_merge=fused_merge)
    if chunk:
        assert rows > 0, "the case must split a request"
    _assert_decode_matches(out, lse, q, kk, vv, q_dtype, sm_scale=sm_scale, logits_soft_cap=cap or None,
                           window_left=window)


KV_DTYPES = axis([torch.float16, torch.float8_e4m3fn], ["f16", "e4m3"])


# Each merge and family on both caches and both builds; the two rotate (emulated_matrix).
@pytest.mark.parametrize("fused_merge,family,kv_dtype,arch",
                         matrix(axis([True, False], ["in-launch", "merge-launch"]), axis(["simt", "mma"]), KV_DTYPES,
                                axis(ARCHS)))
def test_stream_deal_under_cuda_emulation(decode_libs, monkeypatch, family, kv_dtype, arch, fused_merge):
    """The stream deal (TFO_DECODE_STREAM=1; decode_order.cpp): five requests on two groups of
    kv-head blocks, cut into two streams of equal rows, so a request is split between the groups'
    blocks, each block runs its stream's pieces in row order, and the split merges in the launch
    (as run() has it for a launch of its plan's size) or, where the counters would not hold its
    groups, in the merge launch after it; against the float64 reference."""
    monkeypatch.setenv("TFO_DECODE_STREAM", "1")
    hq, hkv, d = 8, 2, 128
    q, ks, vs, paged = _case([200, 130, 321, 96, 250], 16, hq, hkv, d, torch.float16, kv_dtype, "NHD",
                             _seed("stream", family, str(kv_dtype), arch))
    k_scale, v_scale, kk, vv = scaled_reference_kv(ks, vs, kv_dtype, 0.8, 1.3)
    out, lse, rows = _emulated_batch_decode(decode_libs[arch], family, q, paged, "NHD", -1, sm_scale=d ** -0.5,
                                            k_scale=k_scale, v_scale=v_scale, num_blocks=2 * hkv,
                                            fused_merge=fused_merge)
    assert rows == 2, "the cut between the two streams splits one request in two"
    _assert_decode_matches(out, lse, q, kk, vv, torch.float16, sm_scale=d ** -0.5)


# Each task length on both caches and both builds; the two rotate (emulated_matrix).
@pytest.mark.parametrize("tiles,kv_dtype,arch", matrix(axis([3, 12]), KV_DTYPES, axis(ARCHS)))
def test_wide_shape_tasks_of_many_tiles_under_cuda_emulation(decode_libs, tiles, kv_dtype, arch):
    """The tensor-core kernel's wide shape (8 warps, 128-row K/V tiles at head_dim 128) on tasks
    of 3 and 12 tiles, split (merged in the launch) and unsplit, with a partly filled last tile:
    its two-stage pipeline and row addresses over many tiles, against the float64 reference."""
    hq, hkv, d = 8, 2, 128
    kv_len = 128 * tiles - 37
    q, ks, vs, paged = _case([kv_len, 128 * tiles], 16, hq, hkv, d, torch.float16, kv_dtype, "NHD",
                             _seed("wide", tiles, str(kv_dtype), arch))
    k_scale, v_scale, kk, vv = scaled_reference_kv(ks, vs, kv_dtype, 0.8, 1.3)
    for chunk, fused in ((0, False), (128 * tiles // 2, True)):
        out, lse, rows = _emulated_batch_decode(decode_libs[arch], "mma-wide", q, paged, "NHD", chunk,
                                                sm_scale=d ** -0.5, k_scale=k_scale, v_scale=v_scale, num_blocks=8,
                                                fused_merge=fused)
        assert (rows > 0) == (chunk > 0)
        _assert_decode_matches(out, lse, q, kk, vv, torch.float16, f"chunk {chunk}, ", sm_scale=d ** -0.5)


@pytest.mark.parametrize("arch", list(DECODE_BUILDS))
@pytest.mark.parametrize("kv_dtype", [torch.float16, torch.float8_e4m3fn], ids=["f16", "e4m3"])
def test_wide_shape_merges_many_splits_in_launch_under_cuda_emulation(decode_libs, kv_dtype, arch):
    """Split requests of more splits than the merge keeps rows in flight (kMergeLoadsInFlight: 8),
    merged inside the launch by the wide shape's last block: 12 and 20 splits of 128 rows (a
    partly filled last one), 4 query heads a kv head, against the float64 reference."""
    hq, hkv, d = 8, 2, 128
    q, ks, vs, paged = _case([128 * 12 - 37, 128 * 20], 16, hq, hkv, d, torch.float16, kv_dtype, "NHD",
                             _seed("wide-splits", str(kv_dtype), arch))
    k_scale, v_scale, kk, vv = scaled_reference_kv(ks, vs, kv_dtype, 0.8, 1.3)
    out, lse, rows = _emulated_batch_decode(decode_libs[arch], "mma-wide", q, paged, "NHD", 128, sm_scale=d ** -0.5,
                                            k_scale=k_scale, v_scale=v_scale, num_blocks=64, fused_merge=True)
    assert rows == 32  # one partial row per split (12 + 20)
    _assert_decode_matches(out, lse, q, kk, vv, torch.float16, "12 and 20 splits, ", sm_scale=d ** -0.5)


# Both caches on every build; the two rotate (emulated_matrix).
@pytest.mark.parametrize("shape,kv_dtype,arch",
                         matrix(axis([((4, 1), [100, 128 * 3 - 37, 128 * 17 + 40]), ((8, 2), [128 * 2, 128 * 5 - 3])],
                                     ["mqa-17-splits", "gqa4-2-kv-heads"]), KV_DTYPES, axis(DECODE_BUILDS)))
def test_wide_shape_merges_by_words_under_cuda_emulation(decode_libs, shape, kv_dtype, arch):
    """The wide shape's merge by words (split_merge.h), its blocks all running at once as the
    cooperative launch's do, a task a block: an unsplit request beside requests of 2-17 splits of
    128 rows (17: past the 16 words a thread polls together), every split's block merging its
    share of the outputs; then a sliding window that leaves whole splits without a key. Against the
    float64 reference, and every word read is left at zero."""
    ((hq, hkv), kv_lens), d = shape, 128
    q, ks, vs, paged = _case(kv_lens, 16, hq, hkv, d, torch.float16, kv_dtype, "NHD",
                             _seed("words", hq, str(kv_dtype), arch))
    k_scale, v_scale, kk, vv = scaled_reference_kv(ks, vs, kv_dtype, 0.8, 1.3)
    splits = [-(-n // 128) for n in kv_lens]
    tasks = sum(splits) * hkv
    for window in (-1, 300):
        out, lse, rows = _emulated_batch_decode(decode_libs[arch], "mma-wide-words", q, paged, "NHD", 128,
                                                sm_scale=d ** -0.5, window_left=window, k_scale=k_scale,
                                                v_scale=v_scale, num_blocks=tasks, fused_merge=True)
        assert rows == sum(s for s in splits if s > 1)
        _assert_decode_matches(out, lse, q, kk, vv, torch.float16, f"window {window}, ", sm_scale=d ** -0.5,
                               window_left=window)


SEVERAL_TASK_SHAPES = axis([("mma", 128, torch.float16, "NHD"), ("mma", 64, torch.bfloat16, "HND"),
                            ("mma-wide", 128, torch.bfloat16, "NHD"), ("mma", 128, torch.float8_e4m3fn, "NHD"),
                            ("mma-head-columns", 128, torch.float8_e4m3fn, "NHD")],
                           ["narrow-d128-f16", "narrow-d64-bf16-hnd", "wide-d128-bf16", "narrow-d128-e4m3",
                            "head-columns-d128-e4m3"])


# Each shape merged both ways and on both builds; the two rotate (emulated_matrix).
@pytest.mark.parametrize("shape,fused_merge,arch", matrix(SEVERAL_TASK_SHAPES,
                                                          axis([False, True], ["merge-launch", "in-launch"]),
                                                          axis(ARCHS)))
def test_blocks_of_several_tasks_under_cuda_emulation(decode_libs, shape, fused_merge, arch):
    """Blocks that run several tasks in turn, long and short, split and unsplit, some with no
    rows in the sliding window (what a task leaves in shared memory and in flight for the next
    one), against the float64 reference."""
    family, d, kv_dtype, layout = shape
    hq, hkv = 8, 2
    tokens = 128 if family == "mma-wide" else (64 if d <= 128 else 32)
    q_dtype = torch.float16 if kv_dtype in FP8 else kv_dtype
    # In tiles: 9, 4.5, 1, 0.1 and 12 (split by the chunk).
    kv_lens = [9 * tokens, tokens // 2 + 4 * tokens, tokens, 7, 12 * tokens - 5]
    q, ks, vs, paged = _case(kv_lens, 16, hq, hkv, d, q_dtype, kv_dtype, layout,
                             _seed("several", family, d, str(kv_dtype), arch, fused_merge))
    k_scale, v_scale, kk, vv = scaled_reference_kv(ks, vs, kv_dtype, 0.8, 1.3)
    for chunk, window in ((0, -1), (10 * tokens, -1), (0, 3 * tokens + 9)):
        out, lse, rows = _emulated_batch_decode(decode_libs[arch], family, q, paged, layout, chunk,
                                                sm_scale=d ** -0.5, window_left=window, k_scale=k_scale,
                                                v_scale=v_scale, num_blocks=3, fused_merge=fused_merge)
        assert (rows > 0) == (chunk > 0)
        _assert_decode_matches(out, lse, q, kk, vv, q_dtype, f"chunk {chunk} window {window}, ",
                               sm_scale=d ** -0.5, window_left=window)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("shape", [(8, 1, 128, torch.float8_e4m3fn, "NHD"), (6, 2, 64, torch.float8_e5m2, "HND"),
                                   (2, 2, 256, torch.float8_e4m3fn, "NHD"), (16, 4, 128, torch.float8_e5m2, "NHD")],
                         ids=["gqa8-d128-e4m3", "gqa3-d64-e5m2-hnd", "mha-d256-e4m3", "gqa4-d128-e5m2"])
def test_fp8_groups_with_head_columns_under_cuda_emulation(decode_libs, shape, arch):
    """The tensor-core kernel on FP8 caches with the query heads as columns, at groups of 1-8 (a
    full 8-head column tile, an odd group, MHA), d64-256, both encodings, with blocks that run
    several tasks, split requests merged in the launch, a sliding window and a soft cap, against
    the float64 reference (the row form takes these caches in the decode cases above)."""
    hq, hkv, d, kv_dtype, layout = shape
    tokens = 64 if d <= 128 else 32
    kv_lens = [6 * tokens + 5, tokens // 2, 9 * tokens - 7]
    q, ks, vs, paged = _case(kv_lens, 16, hq, hkv, d, torch.bfloat16, kv_dtype, layout,
                             _seed("fp8-groups", hq, hkv, d, str(kv_dtype), arch))
    k_scale, v_scale, kk, vv = scaled_reference_kv(ks, vs, kv_dtype, 0.6, 1.7)
    for chunk, window, cap in ((0, -1, 0.0), (4 * tokens, -1, 0.0), (5 * tokens, 2 * tokens + 3, 15.0)):
        out, lse, rows = _emulated_batch_decode(decode_libs[arch], "mma-head-columns", q, paged, layout, chunk,
                                                sm_scale=d ** -0.5, logits_soft_cap=cap, window_left=window,
                                                k_scale=k_scale, v_scale=v_scale, num_blocks=3, fused_merge=chunk > 0)
        assert (rows > 0) == (chunk > 0)
        _assert_decode_matches(out, lse, q, kk, vv, torch.bfloat16, f"chunk {chunk} window {window} cap {cap}, ",
                               sm_scale=d ** -0.5, window_left=window, logits_soft_cap=cap or None)


# The prefill kernels: the AMD tier's prefill tests, whose host driver entry point the CUDA driver
# shares (tests/cuda_emulation/prefill_emulated.cpp), run on the CUDA backend. Its plans are made
# for the AMD tiles (64 rows), which the CUDA kernels' tiles cover.


# Each case unsplit and split, and on every build; the two rotate (emulated_matrix).
@pytest.mark.parametrize("case,chunk_tiles,arch", matrix(axis(amd_tier.SINGLE_PREFILL_CASES),
                                                         axis([0, 2], ["unsplit", "chunks-of-2"]),
                                                         axis(PREFILL_BUILDS)))
def test_single_prefill_under_cuda_emulation(prefill_libs, case, chunk_tiles, arch):
    """NVIDIA's single-request prefill kernel (two K/V stages of asynchronous copies, masks, soft
    cap, lse), unsplit and split over kv with the merge after it, against the float64 reference."""
    amd_tier.test_single_prefill_under_emulation(prefill_libs, case, chunk_tiles, arch)


# Each dtype on both kernels and every build; the two rotate (emulated_matrix).
@pytest.mark.parametrize("dtype,kind,arch", matrix(amd_tier.DTYPES, axis(["single", "ragged"]), axis(PREFILL_BUILDS)))
def test_prefill_climbing_maxima_under_cuda_emulation(prefill_libs, kind, dtype, arch):
    """Row maxima that creep up over the K/V tiles, then jump: O's and the row sums' rescales
    (on the tensor cores where the sums are) stay exact."""
    amd_tier.test_prefill_climbing_maxima_under_emulation(prefill_libs, kind, dtype, arch)


# Each case in turn and by work lists, and on every build; the two rotate (emulated_matrix).
@pytest.mark.parametrize("case,work_lists,arch", matrix(axis(amd_tier.BATCH_PREFILL_CASES),
                                                        axis([0, 3], ["rotation", "lists"]), axis(PREFILL_BUILDS)))
def test_batch_prefill_under_cuda_emulation(prefill_libs, case, work_lists, arch):
    """NVIDIA's planned prefill kernels on ragged and paged batches (the paged ones with their
    shared row-offset table), split requests merged after them, in turn or by work lists."""
    amd_tier.test_batch_prefill_under_emulation(prefill_libs, case, arch, work_lists)


@pytest.mark.parametrize("arch", list(PREFILL_BUILDS))
@pytest.mark.parametrize("kind", ["ragged", "paged"])
def test_batch_prefill_custom_masks_under_cuda_emulation(prefill_libs, kind, arch):
    """NVIDIA's planned prefill kernels' masked instantiation on batches with custom masks."""
    amd_tier.test_batch_prefill_custom_masks_under_emulation(prefill_libs, arch, kind, 3)
