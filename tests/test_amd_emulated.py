"""AMD emulated tier: the AMD backend's code run on the host under the wave64 emulation
(tests/amd_emulation/), against a float64 reference.

The kernels are built for the host with clang-22 as gfx942 (K = 32 fragments fed to two 16x16x16
MFMAs) and as gfx950 (__gfx950__: one 16x16x32 MFMA); MFMA operand and result layouts come from
AMD's matrix instruction calculator. What this proves: the AMD fragment interface (operand
loads from swizzled LDS tiles, MFMA register layouts, accumulator coordinates) and the DPP /
ds_bpermute row reductions compute what the shared algorithm code expects of them. It does not
prove timing, memory ordering between waves, or the real hardware's behaviour.

Skips without clang-22 unless TFO_REQUIRE_COMPILERS=1 (CI), where a missing compiler fails.
"""
import concurrent.futures
import ctypes
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import math

import numpy as np
import pytest
import torch

import torch_flashinfer_ops as flashinfer

try:
    from . import reference as ref
    from .emulated_matrix import axis, matrix
    from .plan_layout import decode_plan_size
except ImportError:
    import reference as ref
    from emulated_matrix import axis, matrix
    from plan_layout import decode_plan_size

REPO = Path(__file__).resolve().parents[1]
EMULATION = REPO / "tests" / "amd_emulation"
ARCHS = ("gfx942", "gfx950")
TILE = 64


FP8 = {torch.float8_e4m3fn: (1, 256.0), torch.float8_e5m2: (2, 1.0)}  # kv_kind, fp8_decode_factor


def _seed(*parts):
    """A stable seed per test case (Python's str hash changes between processes)."""
    return zlib.crc32(repr(parts).encode())


def _clang():
    clang = shutil.which(os.environ.get("TFO_CLANG", "clang++-22"))
    if clang is None:
        if os.environ.get("TFO_REQUIRE_COMPILERS") == "1":
            pytest.fail("clang++-22 is required for the AMD emulated tier (TFO_REQUIRE_COMPILERS=1)")
        pytest.skip("clang++-22 not found: apt-get install clang-22")
    return clang


def _build(out_dir, source, name, arch, defines=()):
    """Builds an emulation driver for the host as a shared library and loads it."""
    lib = out_dir / f"{name}_{arch}.so"
    # compiler-rt: float -> bfloat16 conversions call __truncsfbf2, which libgcc may lack.
    # Hidden visibility: each library keeps its own instantiations of the kernel templates.
    cmd = [_clang(), "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-rtlib=compiler-rt",
           "-fvisibility=hidden", *(["-D__gfx950__"] if arch == "gfx950" else []), *defines,
           "-I", str(REPO / "csrc" / "hip"), "-I", str(EMULATION), str(EMULATION / source), "-o", str(lib)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr[-4000:]}"
    return ctypes.CDLL(str(lib))


def build_concurrently(builds):
    """{key: (build, *args)} -> {key: build(*args)}, the builds run at once on the machine's
    cores: each is one compiler process, and one after another they took a sixth of the suite."""
    workers = max(1, min(len(builds), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {key: pool.submit(build, *args) for key, (build, *args) in builds.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    _clang()
    return tmp_path_factory.mktemp("amd_emulation")


@pytest.fixture(scope="module")
def probe_libs(build_dir):
    return build_concurrently({arch: (_build, build_dir, "tile_gemm_probe_emulated.cpp", "tile_gemm_probe", arch)
                               for arch in ARCHS})


@pytest.fixture(scope="module")
def decode_libs(build_dir):
    builds = {}
    for arch in ARCHS:
        builds[("simt", arch)] = (_build, build_dir, "decode_emulated.cpp", "decode_simt", arch)
        builds[("mma", arch)] = (_build, build_dir, "decode_emulated.cpp", "decode_mma", arch, ["-DTFO_EMU_DECODE_MMA"])
    return build_concurrently(builds)


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("b_layout", ["nk", "kn"])
def test_tile_gemm_probe_under_emulation(probe_libs, arch, dtype, b_layout):
    """c = a @ B through LDS tiles and MFMA fragments, then the row max and the row sum of
    exp2(c - max) through the row reductions: every element against float64."""
    g = torch.Generator().manual_seed(_seed(arch, str(dtype), b_layout))
    a = torch.randn(TILE, TILE, generator=g).to(dtype)
    b = torch.randn(TILE, TILE, generator=g).to(dtype)
    c = torch.full((TILE, TILE), float("nan"))
    row_max = torch.full((TILE,), float("nan"))
    row_sum = torch.full((TILE,), float("nan"))
    status = probe_libs[arch].tfo_emu_tile_gemm_probe(
        0 if dtype == torch.float16 else 1, 0 if b_layout == "nk" else 1,
        _ptr(a), _ptr(b), _ptr(c), _ptr(row_max), _ptr(row_sum))
    assert status == 0
    a64, b64 = a.double().numpy(), b.double().numpy()
    ref_c = a64 @ (b64.T if b_layout == "nk" else b64)
    ref_max = ref_c.max(axis=1)
    ref_sum = np.exp2(ref_c - ref_max[:, None]).sum(axis=1)
    got = c.double().numpy()
    assert not np.isnan(got).any(), "unwritten elements of c"
    # Products of 16-bit values are exact; only the float32 accumulation rounds.
    np.testing.assert_allclose(got, ref_c, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(row_max.double().numpy(), ref_max, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(row_sum.double().numpy(), ref_sum, rtol=1e-4)


def _plan_and_partials(qo_indptr, kv_lens, q_tile_tokens, kv_chunk_size, hq, d, work_lists=0, hkv=1, causal=False,
                       decode_grid=0):
    """The library's schedule (plan_info) and NaN-poisoned split-KV partial buffers for it;
    work_lists > 0: with plan()'s work lists for a grid of that many blocks (csrc/cpu/work_lists.cpp);
    decode_grid > 0: a decode plan as plan() makes it for a grid of that many blocks, its items
    in the grid's order (csrc/cpu/decode_order.cpp)."""
    plan = torch.empty(1 << 16, dtype=torch.int32)
    kv = torch.tensor(kv_lens, dtype=torch.int32)
    if decode_grid:
        valid, *_ = flashinfer._C.plan_host(torch.empty(0, dtype=torch.int32), kv, plan, q_tile_tokens, hkv, 1,
                                            decode_grid, kv_chunk_size, True, 0, False, -1)
        assert valid
    elif work_lists:
        valid, *_ = flashinfer._C.plan_host(qo_indptr, kv, plan, q_tile_tokens, hkv, 1, 0, kv_chunk_size, True,
                                            work_lists, causal, -1)
        assert valid and plan[3] == work_lists, "the case must take work lists"
    else:
        flashinfer._ops.ops.plan_batch(qo_indptr, kv, plan, q_tile_tokens, kv_chunk_size)
    rows = int(plan[4])  # plan_info header: partial rows
    partial_o = torch.full((max(rows, 1), hq, d), float("nan"))
    partial_lse = torch.full((max(rows, 1), hq), float("nan"))
    return plan, rows, partial_o, partial_lse


def _decode_scales(sm_scale, logits_soft_cap, k_scale, fp8_factor):
    """(q_scale, cap_log2) of DecodeParams as the bindings combine them (decode.cu set_scales)."""
    log2e = 1.0 / math.log(2.0)
    if logits_soft_cap > 0:
        return sm_scale / logits_soft_cap * k_scale * fp8_factor, logits_soft_cap * log2e
    return sm_scale * log2e * k_scale * fp8_factor, 0.0


def _emulated_batch_decode(lib, q, k_cache, v_cache, kv_layout, paged, kv_chunk_size, *, sm_scale,
                           logits_soft_cap=0.0, window_left=-1, k_scale=1.0, v_scale=1.0, num_blocks=3,
                           out_row_pad=0):
    """Plans with the library's planner, then runs lib's decode kernel family and the merge launch
    as the AMD bindings launch them; returns (out, lse, partial rows). out_row_pad > 0: out is a
    view whose rows are that many elements longer than head_dim (contiguous only in its last
    dimension, so most rows' eight-column groups are not 16-byte aligned)."""
    batch, hq, d = q.shape
    tok, head = (1, 2) if kv_layout == "NHD" else (2, 1)
    hkv = k_cache.shape[head]
    kv_kind, factor = FP8.get(k_cache.dtype, (0, 1.0))
    plan, rows, partial_o, partial_lse = _plan_and_partials(torch.arange(batch + 1, dtype=torch.int32),
                                                            paged.seq_lens, 1, kv_chunk_size, hq, d, hkv=hkv,
                                                            decode_grid=num_blocks)
    out = torch.full((batch, hq, d + out_row_pad), float("nan"), dtype=q.dtype)[..., :d]
    lse = torch.full((batch, hq), float("nan"))
    q_scale, cap_log2 = _decode_scales(sm_scale, logits_soft_cap, k_scale, factor)
    i32, f32, ptr = ctypes.c_int, ctypes.c_float, lambda t: ctypes.c_void_p(t.data_ptr())
    status = lib.tfo_emu_batch_decode(
        i32(0 if q.dtype == torch.float16 else 1), i32(kv_kind), i32(d), i32(batch), i32(hq), i32(hkv),
        i32(num_blocks), ptr(q), i32(q.stride(0)), i32(q.stride(1)), ptr(out),
        i32(out.stride(0)), i32(out.stride(1)), ptr(lse), ptr(partial_o), ptr(partial_lse), ptr(k_cache),
        ptr(v_cache), i32(k_cache.stride(0)), i32(k_cache.stride(tok)), i32(k_cache.stride(head)),
        i32(v_cache.stride(0)), i32(v_cache.stride(tok)), i32(v_cache.stride(head)), i32(k_cache.shape[tok]),
        ptr(paged.indptr), ptr(paged.indices), ptr(paged.last_page_len), ptr(plan), i32(decode_plan_size(plan)),
        i32(window_left), f32(q_scale), f32(cap_log2), f32(v_scale * factor))
    assert status == 0
    return out, lse, rows


# (kv_lens, page_size, hq, hkv, head_dim, q dtype, kv dtype, kv_layout, kv_chunk_size)
DECODE_CASES = {
    "f16-gqa4-p16-split": ([1, 37, 300], 16, 8, 2, 128, torch.float16, torch.float16, "NHD", 128),
    "bf16-mha-p1-hnd": ([5, 70], 1, 4, 4, 64, torch.bfloat16, torch.bfloat16, "HND", 0),
    "f16-gqa8-d256": ([90], 16, 8, 1, 256, torch.float16, torch.float16, "NHD", 64),
    "f16-e4m3-gqa4": ([50, 200], 16, 8, 2, 128, torch.float16, torch.float8_e4m3fn, "NHD", 128),
    "bf16-e5m2-gqa2": ([130], 16, 4, 2, 64, torch.bfloat16, torch.float8_e5m2, "NHD", 64),
    # 69 splits: the merge takes the splits' weights a wave at a time (64 lanes, then 5). One kv
    # head: each head's split is a block to emulate (the p16 and e4m3 cases split two heads)
    "f16-gqa4-69-splits": ([1100, 9], 16, 4, 1, 128, torch.float16, torch.float16, "NHD", 16),
    # Groups past half a 16-row tile: rows 8-15 hold heads (12), or all of them do (16, FP8)
    "f16-gqa12": ([64, 150], 16, 12, 1, 128, torch.float16, torch.float16, "NHD", 0),
    "bf16-e4m3-gqa16-split": ([40, 260], 16, 16, 1, 128, torch.bfloat16, torch.float8_e4m3fn, "NHD", 128),
}


def _assert_decode_matches(out, lse, q, ks, vs, dtype, label="", **ref_kw):
    """Each request's out and lse against the float64 decode reference (ks, vs: its K/V as
    the reference takes them, dequantized where the cache is FP8)."""
    for b in range(q.shape[0]):
        r_out, r_lse = ref.decode_ref(q[b], ks[b], vs[b], **ref_kw)
        ref.assert_attention_close(out[b], r_out, dtype, f"{label}request {b}:")
        ref.assert_lse_close(lse[b], r_lse, f"{label}request {b}:")


def scaled_reference_kv(ks, vs, kv_dtype, k_scale, v_scale):
    """(k_scale, v_scale, K, V as the reference reads them) for a decode case: an FP8 cache runs
    with the scales given and is compared on its dequantized values; a 16-bit cache with scales
    of 1, as stored."""
    fp8 = kv_dtype in FP8
    k_scale, v_scale = (k_scale, v_scale) if fp8 else (1.0, 1.0)
    return (k_scale, v_scale, [ref.dequant(k, k_scale if fp8 else None) for k in ks],
            [ref.dequant(v, v_scale if fp8 else None) for v in vs])


# Each case on both kernel families and both targets; the two rotate (emulated_matrix).
@pytest.mark.parametrize("case,family,arch", matrix(axis(DECODE_CASES), axis(["simt", "mma"]), axis(ARCHS)))
def test_batch_decode_under_emulation(decode_libs, case, family, arch):
    """The AMD decode kernels and their merge launch, on a shuffled paged cache with partly
    filled last pages and split requests, against the float64 reference: out and lse."""
    kv_lens, page_size, hq, hkv, d, q_dtype, kv_dtype, layout, chunk = DECODE_CASES[case]
    torch.manual_seed(_seed(case, family, arch))
    ks = [torch.randn(n, hkv, d).to(kv_dtype) for n in kv_lens]
    vs = [torch.randn(n, hkv, d).to(kv_dtype) for n in kv_lens]
    paged = ref.build_paged_kv(ks, vs, page_size, kv_layout=layout, single_tensor=False)
    k_cache, v_cache = paged.cache
    q = torch.randn(len(kv_lens), hq, d).to(q_dtype)
    k_scale, v_scale, kk, vv = scaled_reference_kv(ks, vs, kv_dtype, 0.7, 1.9)
    cap = 20.0 if case == "bf16-mha-p1-hnd" else 0.0
    window = 40 if case == "f16-gqa4-p16-split" else -1
    sm_scale = d ** -0.5
    out, lse, rows = _emulated_batch_decode(decode_libs[(family, arch)], q, k_cache, v_cache, layout, paged,
                                            chunk, sm_scale=sm_scale, logits_soft_cap=cap, window_left=window,
                                            k_scale=k_scale, v_scale=v_scale)
    if chunk:
        assert rows > 0, "the case must split a request"
    _assert_decode_matches(out, lse, q, kk, vv, q_dtype, sm_scale=sm_scale, logits_soft_cap=cap or None,
                           window_left=window)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", ["simt", "mma"])
def test_batch_decode_unaligned_out_under_emulation(decode_libs, family, arch):
    """An output whose rows are 129 elements apart (contiguous in its last dimension only, as
    run() accepts it, so most rows start off a 16-byte boundary): unsplit and split requests
    match the float64 reference and nothing past head_dim is written."""
    torch.manual_seed(_seed("unaligned-out", family, arch))
    kv_lens, hq, hkv, d = [300, 41], 8, 2, 128
    ks = [torch.randn(n, hkv, d).to(torch.float16) for n in kv_lens]
    vs = [torch.randn(n, hkv, d).to(torch.float16) for n in kv_lens]
    paged = ref.build_paged_kv(ks, vs, 16, kv_layout="NHD", single_tensor=False)
    q = torch.randn(len(kv_lens), hq, d).to(torch.float16)
    for chunk in (0, 128):
        out, lse, rows = _emulated_batch_decode(decode_libs[(family, arch)], q, paged.cache[0], paged.cache[1],
                                                "NHD", paged, chunk, sm_scale=d ** -0.5, out_row_pad=1)
        assert out.stride(1) == d + 1 and (rows > 0) == (chunk > 0)
        assert torch.isnan(out.as_strided((len(kv_lens), hq), (hq * (d + 1), d + 1), d)).all(), \
            "the column past head_dim must stay untouched"
        _assert_decode_matches(out, lse, q, ks, vs, torch.float16, f"chunk {chunk}, ", sm_scale=d ** -0.5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", ["simt", "mma"])
def test_batch_decode_climbing_maxima_under_emulation(decode_libs, family, arch):
    """Scores whose running maxima creep up over the tiles and then jump
    (reference.climbing_scores): the tensor-core kernel rescales O only once a maximum passes the
    one in use by more than online_softmax.h's slack (64-lane waves keep the CUDA-core kernel's
    rescale on every step, kSimtRescaleVote); unsplit and split requests."""
    torch.manual_seed(_seed("climbing", family, arch))
    kv_lens, hq, hkv, d = [700, 300], 8, 2, 128
    pairs = [ref.climbing_scores(1, n, hq, hkv, d, torch.float16) for n in kv_lens]
    q = torch.cat([p[0] for p in pairs])
    ks = [p[1] for p in pairs]
    vs = [torch.randn(n, hkv, d).to(torch.float16) for n in kv_lens]
    paged = ref.build_paged_kv(ks, vs, 16, kv_layout="NHD", single_tensor=False)
    for chunk in (0, 256):
        out, lse, rows = _emulated_batch_decode(decode_libs[(family, arch)], q, paged.cache[0], paged.cache[1],
                                                "NHD", paged, chunk, sm_scale=d ** -0.5)
        assert (rows > 0) == (chunk > 0)
        _assert_decode_matches(out, lse, q, ks, vs, torch.float16, f"chunk {chunk}, ", sm_scale=d ** -0.5)


@pytest.fixture(scope="module")
def prefill_libs(build_dir):
    return build_concurrently({arch: (_build, build_dir, "prefill_emulated.cpp", "prefill", arch) for arch in ARCHS})


def _kv_strides(t, kv_layout, paged):
    """(stride_page, stride_token, stride_head) of a K or V tensor in the given layout."""
    off = 1 if paged else 0
    tok, head = (off, off + 1) if kv_layout == "NHD" else (off + 1, off)
    return (t.stride(0) if paged else 0), t.stride(tok), t.stride(head)


def _emulated_prefill(lib, kind, q, k, v, kv_layout, *, qo_indptr=None, kv_indptr=None, kv_indices=None,
                      last_page_len=None, page_size=0, kv_lens=None, kv_chunk_size=0, causal=False, sm_scale,
                      logits_soft_cap=0.0, window_left=-1, packed_mask=None, mask_indptr=None, grid_blocks=3,
                      work_lists=0, row_chunks=1, chunk_tiles=0):
    """Runs the AMD prefill kernels as the bindings launch them; returns (out, lse, partial rows).
    row_chunks: the 64-row tiles each work item spans (plan() makes it one). chunk_tiles > 0: a
    single request split over kv in chunks of that many K/V tiles, then merged."""
    tokens, hq, d = q.shape
    paged = kind == "paged"
    hkv = k.shape[(2 if kv_layout == "NHD" else 1) if paged else (1 if kv_layout == "NHD" else 0)]
    group = hq // hkv
    plan = partial_o = partial_lse = None
    rows = 0
    if kind != "single":  # the AMD prefill tile: 64 rows, the GQA group's rows packed together
        plan, rows, partial_o, partial_lse = _plan_and_partials(qo_indptr, kv_lens, row_chunks * max(1, 64 // group),
                                                                kv_chunk_size, hq, d, work_lists, hkv, causal)
    out = torch.full(q.shape, float("nan"), dtype=q.dtype)
    lse = torch.full((tokens, hq), float("nan"))
    log2e = 1.0 / math.log(2.0)
    logit_scale = sm_scale / logits_soft_cap if logits_soft_cap > 0 else sm_scale * log2e
    stride_page, stride_token, stride_head = _kv_strides(k, kv_layout, paged)
    i32, f32 = ctypes.c_int, ctypes.c_float
    ptr = lambda t: ctypes.c_void_p(t.data_ptr() if t is not None else 0)  # noqa: E731
    kv_len = k.shape[0 if kv_layout == "NHD" else 1] if kind == "single" else 0
    status = lib.tfo_emu_prefill(
        i32(0 if q.dtype == torch.float16 else 1), i32(d), i32({"single": 0, "ragged": 1, "paged": 2}[kind]),
        i32(tokens), i32(grid_blocks), ptr(q), i32(q.stride(0)), i32(q.stride(1)), ptr(out), i32(out.stride(0)),
        i32(out.stride(1)), ptr(lse), ptr(k), ptr(v), i32(stride_page), i32(stride_token), i32(stride_head),
        i32(page_size), ptr(qo_indptr), ptr(kv_indptr), ptr(kv_indices), ptr(last_page_len), ptr(plan),
        i32(tokens if kind == "single" else 0), i32(kv_len), ptr(partial_o), ptr(partial_lse), ptr(packed_mask),
        ptr(mask_indptr), i32(hq), i32(hkv), i32(int(causal)), i32(window_left), f32(logit_scale),
        f32(logits_soft_cap * log2e), f32(1.0), i32(chunk_tiles))
    assert status == 0
    return out, lse, rows


# (qo_len, kv_len, hq, hkv, head_dim, dtype, kv_layout, causal, logits_soft_cap, window_left, custom mask)
SINGLE_PREFILL_CASES = {
    # Long enough for several K/V tiles per q tile (AMD: 64 rows; 32 at head_dim 256): the split
    # launches cut them into chunks.
    "f16-gqa4-causal-long": (150, 200, 8, 2, 64, torch.float16, "NHD", True, 0.0, -1, False),
    "bf16-gqa2-window-long": (90, 260, 4, 2, 128, torch.bfloat16, "HND", False, 0.0, 100, False),
    # A few queries against a long kv: chunks of one K/V tile make 11, past the merge's groups of 8.
    "f16-few-queries-long-kv": (8, 700, 4, 2, 64, torch.float16, "NHD", True, 0.0, -1, False),
    "f16-gqa4-causal": (40, 70, 8, 2, 128, torch.float16, "NHD", True, 0.0, -1, False),
    "bf16-mha-cap-window-hnd": (33, 33, 4, 4, 64, torch.bfloat16, "HND", True, 30.0, 10, False),
    "f16-d256-custom-mask": (17, 50, 4, 2, 256, torch.float16, "NHD", False, 0.0, -1, True),
    # A group of 3: packed rows of one token straddle the 64-row tiles.
    "f16-gqa3-causal": (37, 60, 6, 2, 128, torch.float16, "NHD", True, 0.0, -1, False),
}


SPLITS = axis([0, 1, 2], ["unsplit", "chunks-of-1", "chunks-of-2"])


# Each case on every split and both targets; the targets rotate over the splits (emulated_matrix).
@pytest.mark.parametrize("case,chunk_tiles,arch", matrix(axis(SINGLE_PREFILL_CASES), SPLITS, axis(ARCHS)))
def test_single_prefill_under_emulation(prefill_libs, case, chunk_tiles, arch):
    """The AMD single-request prefill kernel (transposed score fragments, DPP row reductions,
    masks, soft cap, lse) against the float64 reference; unsplit, and split over kv in chunks of
    one and two K/V tiles with the merge after it (csrc/include/single_prefill_split.h)."""
    qo, kv, hq, hkv, d, dtype, layout, causal, cap, window, use_mask = SINGLE_PREFILL_CASES[case]
    torch.manual_seed(_seed(case, arch, chunk_tiles))
    q = torch.randn(qo, hq, d).to(dtype)
    k, v = torch.randn(kv, hkv, d).to(dtype), torch.randn(kv, hkv, d).to(dtype)
    mask = ref.random_mask(qo, kv) if use_mask else None
    sm_scale = d ** -0.5
    out, lse, _ = _emulated_prefill(prefill_libs[arch], "single", q, ref.to_layout(k, layout),
                                    ref.to_layout(v, layout), layout, causal=causal, sm_scale=sm_scale,
                                    logits_soft_cap=cap, window_left=window,
                                    packed_mask=ref.packbits_little(mask) if use_mask else None,
                                    chunk_tiles=chunk_tiles)
    r_out, r_lse = ref.attention_ref(q, k, v, causal=causal, sm_scale=sm_scale, logits_soft_cap=cap or None,
                                     window_left=window, custom_mask=mask)
    ref.assert_attention_close(out, r_out, dtype)
    ref.assert_lse_close(lse, r_lse)


DTYPES = axis([torch.float16, torch.bfloat16], ["f16", "bf16"])


# Each dtype on both kernels and both targets; the two rotate (emulated_matrix).
@pytest.mark.parametrize("dtype,kind,arch", matrix(DTYPES, axis(["single", "ragged"]), axis(ARCHS)))
def test_prefill_climbing_maxima_under_emulation(prefill_libs, kind, dtype, arch):
    """Row maxima that creep up over the K/V tiles and then jump (reference.climbing_scores): O
    is rescaled only once a maximum passes the one in use by more than the kernels' slack, so
    both the small moves and the jump must stay exact."""
    torch.manual_seed(_seed(kind, str(dtype), arch))
    qo_lens, kv_lens, hq, hkv, d = [40, 9], [700, 500], 4, 2, 64
    qs, ks = zip(*(ref.climbing_scores(a, b, hq, hkv, d, dtype) for a, b in zip(qo_lens, kv_lens)))
    vs = [torch.randn(n, hkv, d).to(dtype) for n in kv_lens]
    if kind == "single":
        qs, ks, vs = qs[:1], ks[:1], vs[:1]
        out, lse, _ = _emulated_prefill(prefill_libs[arch], "single", qs[0], ks[0], vs[0], "NHD", causal=True,
                                        sm_scale=d ** -0.5)
    else:
        out, lse, _ = _emulated_prefill(prefill_libs[arch], "ragged", torch.cat(qs), torch.cat(ks), torch.cat(vs),
                                        "NHD", qo_indptr=ref.indptr_from_lens(qo_lens),
                                        kv_indptr=ref.indptr_from_lens(kv_lens), kv_lens=kv_lens, causal=True,
                                        sm_scale=d ** -0.5)
    row = 0
    for b, q in enumerate(qs):
        r_out, r_lse = ref.attention_ref(q, ks[b], vs[b], causal=True, sm_scale=d ** -0.5)
        ref.assert_attention_close(out[row:row + len(q)], r_out, dtype, f"request {b}:")
        ref.assert_lse_close(lse[row:row + len(q)], r_lse, f"request {b}:")
        row += len(q)


# (qo_lens, kv_lens, hq, hkv, head_dim, dtype, kind, page_size, kv_layout, causal, kv_chunk_size)
BATCH_PREFILL_CASES = {
    "ragged-f16-gqa4-causal-split": ([5, 40, 1], [30, 70, 90], 8, 2, 128, torch.float16, "ragged", 0, "NHD", True, 32),
    "paged-bf16-gqa2-p16-hnd": ([3, 20], [50, 20], 4, 2, 64, torch.bfloat16, "paged", 16, "HND", False, 0),
    "paged-f16-mqa-p1-split": ([9, 2], [9, 40], 4, 1, 64, torch.float16, "paged", 1, "NHD", True, 16),
    # fp16 paged at head_dim 128 with two kv heads: NVIDIA's shared row offsets over pages,
    # tokens and the kv head's offset, two K/V tiles.
    "paged-f16-gqa4-p16-hnd": ([20, 7], [70, 33], 8, 2, 128, torch.float16, "paged", 16, "HND", True, 0),
    "ragged-bf16-gqa3-causal-split": ([7, 25], [40, 25], 6, 2, 64, torch.bfloat16, "ragged", 0, "NHD", True, 16),
    # A request with no query rows between two others (its item is in a work list and does nothing).
    "ragged-f16-empty-request": ([6, 0, 40], [30, 20, 70], 8, 2, 128, torch.float16, "ragged", 0, "NHD", True, 0),
    # head_dim 64 ragged, unsplit: NVIDIA stages these units' output as T in the Q tile.
    "ragged-f16-gqa2-d64": ([20, 70], [20, 90], 4, 2, 64, torch.float16, "ragged", 0, "NHD", False, 0),
    "ragged-bf16-gqa4-d64-causal": ([33, 9], [80, 9], 8, 2, 64, torch.bfloat16, "ragged", 0, "HND", True, 0),
}


WORK_LISTS = axis([0, 3, 5], ["rotation", "lists", "lists-for-another-grid"])


# Each case on both targets and every way of taking the units; the two rotate (emulated_matrix).
@pytest.mark.parametrize("case,arch,work_lists", matrix(axis(BATCH_PREFILL_CASES), axis(ARCHS), WORK_LISTS))
def test_batch_prefill_under_emulation(prefill_libs, case, arch, work_lists):
    """The AMD planned prefill kernel on ragged and paged batches (the library's plan, split
    requests merged by merge_partials_kernel) against the float64 reference; its grid of 3 blocks
    takes the units in turn, or the plan's work lists (one per block; a plan with lists for a
    grid of 5 is run in turn, as if it had none)."""
    qo_lens, kv_lens, hq, hkv, d, dtype, kind, page_size, layout, causal, chunk = BATCH_PREFILL_CASES[case]
    torch.manual_seed(_seed(case, arch))
    qs = [torch.randn(n, hq, d).to(dtype) for n in qo_lens]
    ks = [torch.randn(n, hkv, d).to(dtype) for n in kv_lens]
    vs = [torch.randn(n, hkv, d).to(dtype) for n in kv_lens]
    q = torch.cat(qs)
    qo_indptr = ref.indptr_from_lens(qo_lens)
    sm_scale = d ** -0.5
    if kind == "ragged":
        k = ref.to_layout(torch.cat(ks), layout)
        v = ref.to_layout(torch.cat(vs), layout)
        out, lse, rows = _emulated_prefill(prefill_libs[arch], kind, q, k, v, layout, qo_indptr=qo_indptr,
                                           kv_indptr=ref.indptr_from_lens(kv_lens), kv_lens=kv_lens,
                                           kv_chunk_size=chunk, causal=causal, sm_scale=sm_scale,
                                           work_lists=work_lists)
    else:
        paged = ref.build_paged_kv(ks, vs, page_size, kv_layout=layout, single_tensor=False)
        out, lse, rows = _emulated_prefill(prefill_libs[arch], kind, q, paged.cache[0], paged.cache[1], layout,
                                           qo_indptr=qo_indptr, kv_indptr=paged.indptr, kv_indices=paged.indices,
                                           last_page_len=paged.last_page_len, page_size=page_size,
                                           kv_lens=kv_lens, kv_chunk_size=chunk, causal=causal, sm_scale=sm_scale,
                                           work_lists=work_lists)
    if chunk:
        assert rows > 0, "the case must split a request"
    for b in range(len(qo_lens)):
        lo, hi = int(qo_indptr[b]), int(qo_indptr[b + 1])
        r_out, r_lse = ref.attention_ref(qs[b], ks[b], vs[b], causal=causal, sm_scale=sm_scale)
        ref.assert_attention_close(out[lo:hi], r_out, dtype, f"request {b}:")
        ref.assert_lse_close(lse[lo:hi], r_lse, f"request {b}:")


@pytest.mark.parametrize("work_lists", [0, 3], ids=["rotation", "lists"])
@pytest.mark.parametrize("arch", ARCHS)
def test_batch_prefill_items_of_two_tiles_under_emulation(prefill_libs, arch, work_lists):
    """Work items twice the kernel's tile (the kernel runs an item's row chunks in turn, from the
    rotation or from a list entry): ragged, causal, GQA 4, a split request."""
    qo_lens, kv_lens, hq, hkv, d, dtype = [5, 70, 33], [30, 90, 33], 8, 2, 64, torch.float16
    torch.manual_seed(_seed("two-tiles", arch, work_lists))
    qs = [torch.randn(n, hq, d).to(dtype) for n in qo_lens]
    ks = [torch.randn(n, hkv, d).to(dtype) for n in kv_lens]
    vs = [torch.randn(n, hkv, d).to(dtype) for n in kv_lens]
    qo_indptr = ref.indptr_from_lens(qo_lens)
    out, lse, rows = _emulated_prefill(prefill_libs[arch], "ragged", torch.cat(qs), torch.cat(ks), torch.cat(vs), "NHD",
                                       qo_indptr=qo_indptr, kv_indptr=ref.indptr_from_lens(kv_lens), kv_lens=kv_lens,
                                       kv_chunk_size=48, causal=True, sm_scale=d ** -0.5, work_lists=work_lists,
                                       row_chunks=2)
    assert rows > 0
    for b in range(len(qo_lens)):
        lo, hi = int(qo_indptr[b]), int(qo_indptr[b + 1])
        r_out, r_lse = ref.attention_ref(qs[b], ks[b], vs[b], causal=True, sm_scale=d ** -0.5)
        ref.assert_attention_close(out[lo:hi], r_out, dtype, f"request {b}:")
        ref.assert_lse_close(lse[lo:hi], r_lse, f"request {b}:")


@pytest.mark.parametrize("work_lists", [0, 3], ids=["rotation", "lists"])
@pytest.mark.parametrize("kind", ["ragged", "paged"])
@pytest.mark.parametrize("arch", ARCHS)
def test_batch_prefill_custom_masks_under_emulation(prefill_libs, arch, kind, work_lists):
    """Batches with per-request custom masks (tree / speculative decoding): AMD's planned kernels
    take their masked instantiation, as the bindings pick it; a split request, a window, and the
    causal flag, which a mask replaces."""
    from torch_flashinfer_ops._mask import pack_custom_mask

    qo_lens, kv_lens, hq, hkv, d, dtype = [9, 40, 3], [30, 70, 3], 8, 2, 64, torch.bfloat16
    torch.manual_seed(_seed("masks", arch, kind, work_lists))
    qs = [torch.randn(n, hq, d).to(dtype) for n in qo_lens]
    ks = [torch.randn(n, hkv, d).to(dtype) for n in kv_lens]
    vs = [torch.randn(n, hkv, d).to(dtype) for n in kv_lens]
    masks = [ref.random_mask(a, b) for a, b in zip(qo_lens, kv_lens)]
    packed, mask_indptr = pack_custom_mask(torch.cat([m.reshape(-1) for m in masks]), torch.tensor(qo_lens),
                                           torch.tensor(kv_lens))
    qo_indptr = ref.indptr_from_lens(qo_lens)
    window, sm_scale = 25, d ** -0.5
    common = dict(qo_indptr=qo_indptr, kv_lens=kv_lens, kv_chunk_size=32, causal=True, sm_scale=sm_scale,
                  window_left=window, packed_mask=packed, mask_indptr=mask_indptr.to(torch.int32),
                  work_lists=work_lists)
    if kind == "ragged":
        out, lse, rows = _emulated_prefill(prefill_libs[arch], kind, torch.cat(qs), torch.cat(ks), torch.cat(vs),
                                           "NHD", kv_indptr=ref.indptr_from_lens(kv_lens), **common)
    else:
        paged = ref.build_paged_kv(ks, vs, 16, kv_layout="NHD", single_tensor=False)
        out, lse, rows = _emulated_prefill(prefill_libs[arch], kind, torch.cat(qs), paged.cache[0], paged.cache[1],
                                           "NHD", kv_indptr=paged.indptr, kv_indices=paged.indices,
                                           last_page_len=paged.last_page_len, page_size=16, **common)
    assert rows > 0
    for b in range(len(qo_lens)):
        lo, hi = int(qo_indptr[b]), int(qo_indptr[b + 1])
        r_out, r_lse = ref.attention_ref(qs[b], ks[b], vs[b], sm_scale=sm_scale, window_left=window,
                                         custom_mask=masks[b])
        ref.assert_attention_close(out[lo:hi], r_out, dtype, f"request {b}:")
        ref.assert_lse_close(lse[lo:hi], r_lse, f"request {b}:")


@pytest.fixture(scope="module")
def page_cascade_lib(build_dir):
    return _build(build_dir, "page_cascade_emulated.cpp", "page_cascade", "gfx942")


CACHE_KINDS = {torch.float16: 0, torch.bfloat16: 0, torch.float8_e4m3fn: 1, torch.float8_e5m2: 2,
               torch.float8_e4m3fnuz: 3, torch.float8_e5m2fnuz: 4}


@pytest.mark.parametrize("cache_dtype,src_dtype,heads,d,scales", [
    (torch.float16, torch.float16, 4, 128, (1.0, 1.0)),
    (torch.bfloat16, torch.bfloat16, 3, 64, (1.0, 1.0)),
    (torch.float8_e4m3fn, torch.float16, 2, 64, (0.5, 2.0)),
    (torch.float8_e5m2, torch.bfloat16, 2, 128, (1.0, 1.0)),
    (torch.float8_e4m3fnuz, torch.float16, 2, 64, (2.0, 0.5)),
    (torch.float8_e5m2fnuz, torch.float16, 2, 64, (1.0, 1.0)),
], ids=["f16", "bf16-3heads", "e4m3", "e5m2", "e4m3fnuz", "e5m2fnuz"])
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
def test_page_kernels_under_emulation(page_cascade_lib, cache_dtype, src_dtype, heads, d, scales, kv_layout):
    """get_seq_lens, get_batch_indices_positions and the append scatter (FP8: value / scale
    encoded) of the AMD build, on a poisoned cache with partly filled pages and appends that
    cross page boundaries: bit for bit against the reference scatter."""
    lib = page_cascade_lib
    torch.manual_seed(_seed(str(cache_dtype), kv_layout))
    old_lens, appended, page_size = [15, 0, 40, 3], [3, 17, 30, 1], 16
    new_lens = [o + a for o, a in zip(old_lens, appended)]
    indptr, indices, last, num_pages = ref.make_page_table(new_lens, page_size)
    i32, ptr = ctypes.c_int, lambda t: ctypes.c_void_p(t.data_ptr())  # noqa: E731
    seq_lens = torch.full((len(new_lens),), -9, dtype=torch.int32)
    lib.tfo_emu_seq_lens(ptr(indptr), ptr(last), i32(len(new_lens)), i32(page_size), ptr(seq_lens))
    assert seq_lens.tolist() == ref.seq_lens_ref(indptr, last, page_size) == new_lens
    append_indptr = ref.indptr_from_lens(appended)
    nnz = int(append_indptr[-1]) + 2  # two padding entries
    bi = torch.full((nnz,), -9, dtype=torch.int32)
    pos = torch.full((nnz,), -9, dtype=torch.int32)
    lib.tfo_emu_batch_indices_positions(ptr(append_indptr), ptr(seq_lens), i32(len(new_lens)), i32(nnz), ptr(bi),
                                        ptr(pos))
    r_bi, r_pos = ref.batch_indices_positions_ref(append_indptr, seq_lens)
    assert bi.tolist() == r_bi + [-1, -1] and pos.tolist() == r_pos + [-1, -1]

    shape = (num_pages,) + ((page_size, heads, d) if kv_layout == "NHD" else (heads, page_size, d))
    fp8 = cache_dtype.itemsize == 1
    poison = (lambda: torch.randint(0, 256, shape, dtype=torch.uint8).view(cache_dtype)) if fp8 else \
        (lambda: torch.full(shape, float("nan"), dtype=cache_dtype))
    k_cache, v_cache = poison(), poison()
    key = torch.randn(nnz, heads, d).to(src_dtype)
    value = torch.randn(nnz, heads, d).to(src_dtype)
    k_scale, v_scale = scales
    tok, head = (1, 2) if kv_layout == "NHD" else (2, 1)
    expected = ref.append_ref((k_cache, v_cache), key.float() / k_scale, value.float() / v_scale, r_bi, r_pos,
                              indices, indptr, kv_layout)
    i64, f32 = ctypes.c_int64, ctypes.c_float
    lib.tfo_emu_append(
        i32(0 if src_dtype == torch.float16 else 1), i32(CACHE_KINDS[cache_dtype]), i32(3), ptr(key), ptr(value),
        i64(key.stride(0)), i64(key.stride(1)), i64(value.stride(0)), i64(value.stride(1)), ptr(bi), ptr(pos),
        ptr(indices), ptr(indptr), ptr(k_cache), ptr(v_cache), i64(k_cache.stride(0)), i64(k_cache.stride(tok)),
        i64(k_cache.stride(head)), i64(v_cache.stride(0)), i64(v_cache.stride(tok)), i64(v_cache.stride(head)),
        i32(page_size), i32(nnz), i32(heads), i32(d), f32(1.0 / k_scale), f32(1.0 / v_scale))
    bits = torch.uint8 if fp8 else torch.int16
    for got, want, name in ((k_cache, expected[0], "k"), (v_cache, expected[1], "v")):
        n_bad = int((got.view(bits) != want.view(bits)).sum())
        assert n_bad == 0, f"{name}: {n_bad} cache elements differ from the reference scatter"


def test_page_divisor_under_emulation(page_cascade_lib):
    """The multiply-and-shift page division every paged kernel uses, against Python's divmod:
    each page size 1..1100, then large and boundary ones, at the edges of every page and at
    random positions up to 2^31 - 1."""
    g = torch.Generator().manual_seed(_seed("page_divisor"))
    top = 2**31 - 1
    sizes = list(range(1, 1101)) + [2**k + e for k in range(11, 31) for e in (-1, 0, 1)] + \
        [top, 2**31 - 2, 3 * 2**29, 1_000_003, 65_537 * 3] + torch.randint(1, top, (200,), generator=g).tolist()
    for d in sizes:
        near = [0, 1, d - 1, d, d + 1, 2 * d - 1, 2 * d, top, top - 1, top - d, (top // d) * d, (top // d) * d - 1]
        pos = [n for n in near if 0 <= n <= top] + torch.randint(0, top, (64,), generator=g).tolist() + \
            torch.randint(0, min(64 * d, top), (64,), generator=g).tolist()
        positions = torch.tensor(pos, dtype=torch.int32)
        pages = torch.full_like(positions, -1)
        slots = torch.full_like(positions, -1)
        page_cascade_lib.tfo_emu_page_slots(ctypes.c_int(d), _ptr(positions), ctypes.c_int(len(pos)), _ptr(pages),
                                            _ptr(slots))
        want = [divmod(n, d) for n in pos]
        got = list(zip(pages.tolist(), slots.tolist()))
        bad = [(n, g_, w) for n, g_, w in zip(pos, got, want) if g_ != w]
        assert not bad, f"page size {d}: (position, got, want) {bad[:5]}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=["f16", "bf16", "f32"])
def test_merge_states_under_emulation(page_cascade_lib, dtype):
    """merge_state (out of place, in place with a mask) and merge_states of the AMD build,
    with -inf lse rows, against the float64 merge."""
    lib = page_cascade_lib
    torch.manual_seed(_seed(str(dtype)))
    seq, heads, d, n = 5, 3, 128, 4
    code = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}[dtype]
    ptr = lambda t: ctypes.c_void_p(t.data_ptr() if t is not None else 0)  # noqa: E731
    i32 = ctypes.c_int
    va, vb = torch.randn(seq, heads, d).to(dtype), torch.randn(seq, heads, d).to(dtype)
    sa, sb = torch.randn(seq, heads) * 4, torch.randn(seq, heads) * 4
    sa[1, 2] = sb[1, 2] = float("-inf")  # nothing visible on either side
    sb[3, 0] = float("-inf")
    vo, so = torch.full_like(va, float("nan")), torch.full_like(sa, float("nan"))
    lib.tfo_emu_merge_two(i32(code), ptr(va), ptr(sa), ptr(vb), ptr(sb), ptr(vo), ptr(so), ptr(None), i32(seq),
                          i32(heads), i32(d))
    r_v, r_s = ref.merge_ref([va, vb], [sa, sb])
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}[dtype]
    torch.testing.assert_close(vo.double(), r_v, rtol=tol, atol=tol)
    torch.testing.assert_close(so.double(), r_s, rtol=1e-5, atol=1e-5)

    mask = torch.tensor([True, False, True, True, False])
    va2, sa2 = va.clone(), sa.clone()
    lib.tfo_emu_merge_two(i32(code), ptr(va2), ptr(sa2), ptr(vb), ptr(sb), ptr(va2), ptr(sa2), ptr(mask), i32(seq),
                          i32(heads), i32(d))
    torch.testing.assert_close(va2[mask].double(), r_v[mask], rtol=tol, atol=tol)
    assert torch.equal(va2[~mask], va[~mask]) and torch.equal(sa2[~mask], sa[~mask])

    v = torch.randn(seq, n, heads, d).to(dtype)
    s = torch.randn(seq, n, heads) * 4
    s[2, :, 1] = float("-inf")
    out_v, out_s = torch.full((seq, heads, d), float("nan")).to(dtype), torch.full((seq, heads), float("nan"))
    lib.tfo_emu_merge_many(i32(code), ptr(v), ptr(s), ptr(out_v), ptr(out_s), i32(seq), i32(n), i32(heads), i32(d))
    r_v, r_s = ref.merge_ref([v[:, i] for i in range(n)], [s[:, i] for i in range(n)])
    torch.testing.assert_close(out_v.double(), r_v, rtol=tol, atol=tol)
    torch.testing.assert_close(out_s.double(), r_s, rtol=1e-5, atol=1e-5)
