"""Naive float64 reference for the CPU-tier tests.

Everything here is plain torch in float64 on the CPU and independent of the
library under test: attention for one request, paged KV-cache construction and
gathering, the state-merge rule, mask bit packing and the tolerance checks from
DESIGN.md ("Numerics").

Conventions (FlashInfer 0.2.14):

* q is ``[qo_len, num_qo_heads, head_dim]``; k/v are ``[kv_len, num_kv_heads,
  head_dim]`` (NHD). Query head ``h`` reads KV head ``h // (num_qo_heads //
  num_kv_heads)``.
* logits = q.k * sm_scale; with a soft cap ``c > 0``: ``c * tanh(logits / c)``.
* Causal is aligned to the end: kv ``j`` is visible to query ``i`` iff
  ``j <= i + kv_len - qo_len``. A sliding window ``window_left >= 0`` further
  requires ``j >= i + kv_len - qo_len - window_left``.
* lse is base 2: log2(sum_j exp(logit_j)) = natural lse * log2(e).
* A row that sees nothing gives output 0 and lse -inf.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

LOG2E = 1.0 / math.log(2.0)

# --------------------------------------------------------------------------
# Tolerances (DESIGN.md, "Numerics")
# --------------------------------------------------------------------------

# Relative Frobenius error ||out - ref|| / ||ref||: exactly as DESIGN.md says.
REL_NORM_TOL = {torch.float16: 5e-3, torch.bfloat16: 1e-2}

# Elementwise allclose (rtol = atol), the tolerances upstream FlashInfer's tests
# use (DESIGN.md): 1e-3 fp16, 1e-2 bf16. Upstream compares against an fp16
# reference; here the reference is float64. A simulated fp16 kernel (fp32
# logits and online softmax, probabilities rounded to fp16 before the P.V
# product, output rounded to fp16) needs at most ~4e-4 against float64 on the
# shapes of these tests, so 1e-3 leaves headroom and is kept as is.
ALLCLOSE_TOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}

# log-sum-exp (float32, base 2): atol = rtol = 1e-3.
LSE_TOL = 1e-3


def rel_norm_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out = out.to(torch.float64)
    ref = ref.to(torch.float64)
    den = torch.linalg.vector_norm(ref).item()
    num = torch.linalg.vector_norm(out - ref).item()
    if den == 0.0:
        return num
    return num / den


def assert_attention_close(out: torch.Tensor, ref: torch.Tensor, dtype=None, msg=""):
    """Check an fp16/bf16 output against the float64 reference."""
    if dtype is None:
        dtype = out.dtype
    assert out.shape == ref.shape, f"{msg} shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert out.dtype == dtype, f"{msg} dtype {out.dtype} != {dtype}"
    o = out.to(torch.float64)
    n_bad = (~torch.isfinite(o)).sum().item()
    assert n_bad == 0, f"{msg} {n_bad} non-finite output elements (unwritten/poisoned?)"
    err = rel_norm_err(o, ref)
    assert err < REL_NORM_TOL[dtype], (
        f"{msg} relative Frobenius error {err:.3e} >= {REL_NORM_TOL[dtype]:.1e}"
    )
    tol = ALLCLOSE_TOL[dtype]
    torch.testing.assert_close(o, ref.to(torch.float64), rtol=tol, atol=tol, msg=lambda m: f"{msg} {m}")


def assert_lse_close(lse: torch.Tensor, ref_lse: torch.Tensor, msg=""):
    """Check a float32 base-2 lse against the reference (-inf must match exactly)."""
    assert lse.shape == ref_lse.shape, f"{msg} lse shape {tuple(lse.shape)} != {tuple(ref_lse.shape)}"
    assert lse.dtype == torch.float32, f"{msg} lse dtype {lse.dtype} != float32"
    l64 = lse.to(torch.float64)
    assert not torch.isnan(l64).any(), f"{msg} NaN in lse (unwritten/poisoned?)"
    torch.testing.assert_close(
        l64, ref_lse.to(torch.float64), rtol=LSE_TOL, atol=LSE_TOL, msg=lambda m: f"{msg} lse {m}"
    )


def nan_like(shape, dtype) -> torch.Tensor:
    """A poisoned (NaN-filled) output buffer."""
    return torch.full(tuple(shape), float("nan"), dtype=dtype)


# --------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------


def visibility_mask(
    qo_len: int,
    kv_len: int,
    causal: bool = False,
    window_left: int = -1,
    custom_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Bool [qo_len, kv_len]: True where query i may attend to kv j."""
    i = torch.arange(qo_len).unsqueeze(1)
    j = torch.arange(kv_len).unsqueeze(0)
    shift = kv_len - qo_len
    if custom_mask is not None:
        mask = custom_mask.to(torch.bool).reshape(qo_len, kv_len).clone()
    else:
        mask = torch.ones(qo_len, kv_len, dtype=torch.bool)
        if causal:
            mask &= j <= i + shift
    if window_left is not None and window_left >= 0:
        mask &= j >= i + shift - window_left
    return mask


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    sm_scale: Optional[float] = None,
    logits_soft_cap: Optional[float] = None,
    window_left: int = -1,
    custom_mask: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attention for one request, NHD.

    q: [qo_len, Hq, D]; k, v: [kv_len, Hkv, D] (any dtype; they are converted
    to float64 exactly). custom_mask: bool [qo_len, kv_len] (replaces causal).
    Returns (out float64 [qo_len, Hq, D], lse base-2 float64 [qo_len, Hq]).
    """
    assert q.dim() == 3 and k.dim() == 3 and v.dim() == 3
    qo_len, hq, d = q.shape
    kv_len, hkv, _ = k.shape
    assert hq % hkv == 0
    group = hq // hkv
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(d)
    qf = q.to(torch.float64)
    kf = k.to(torch.float64).repeat_interleave(group, dim=1)
    vf = v.to(torch.float64).repeat_interleave(group, dim=1)
    logits = torch.einsum("qhd,khd->hqk", qf, kf) * sm_scale
    if logits_soft_cap is not None and logits_soft_cap > 0:
        logits = logits_soft_cap * torch.tanh(logits / logits_soft_cap)
    mask = visibility_mask(qo_len, kv_len, causal, window_left, custom_mask)
    mask = mask.unsqueeze(0).expand(hq, qo_len, kv_len)
    logits = logits.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)  # [hq, qo_len], natural log
    lse_safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    p = torch.where(mask, torch.exp(logits - lse_safe.unsqueeze(-1)), torch.zeros_like(logits))
    out = torch.einsum("hqk,khd->qhd", p, vf)
    lse2 = (lse * LOG2E).transpose(0, 1).contiguous()  # [qo_len, hq]
    return out, lse2


def decode_ref(q, k, v, **kw) -> Tuple[torch.Tensor, torch.Tensor]:
    """Decode for one request: q [Hq, D] -> (out [Hq, D], lse [Hq])."""
    out, lse = attention_ref(q.unsqueeze(0), k, v, **kw)
    return out[0], lse[0]


def dequant(x: torch.Tensor, scale: Optional[float]) -> torch.Tensor:
    """float64 value of a (possibly fp8) tensor times its scale."""
    x = x.to(torch.float64)
    return x if scale is None else x * scale


# --------------------------------------------------------------------------
# Layouts and paged KV-cache
# --------------------------------------------------------------------------


def to_layout(x: torch.Tensor, kv_layout: str) -> torch.Tensor:
    """[kv_len, H, D] (NHD) -> the given layout (HND is [H, kv_len, D]), contiguous."""
    if kv_layout == "NHD":
        return x.contiguous()
    assert kv_layout == "HND"
    return x.transpose(0, 1).contiguous()


def indptr_from_lens(lens: Sequence[int]) -> torch.Tensor:
    out = [0]
    for n in lens:
        out.append(out[-1] + int(n))
    return torch.tensor(out, dtype=torch.int32)


@dataclass
class PagedKV:
    cache: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]
    indptr: torch.Tensor  # int32 [batch + 1]
    indices: torch.Tensor  # int32 [indptr[-1]]
    last_page_len: torch.Tensor  # int32 [batch]
    seq_lens: List[int]
    page_size: int
    kv_layout: str
    num_pages: int


def num_pages_for(seq_len: int, page_size: int) -> int:
    return max(1, (seq_len + page_size - 1) // page_size)


def make_page_table(
    seq_lens: Sequence[int], page_size: int, extra_pages: int = 3
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Shuffled page ids. Returns (indptr, indices, last_page_len, num_pages)."""
    npages = [num_pages_for(n, page_size) for n in seq_lens]
    total = sum(npages)
    num_pages = total + extra_pages
    perm = torch.randperm(num_pages)[:total].to(torch.int32)
    indptr = indptr_from_lens(npages)
    last = [n - (p - 1) * page_size for n, p in zip(seq_lens, npages)]
    return indptr, perm.contiguous(), torch.tensor(last, dtype=torch.int32), num_pages


def _alloc_cache(num_pages, page_size, h, d, dtype, kv_layout, single, fill):
    if kv_layout == "NHD":
        page_shape = (page_size, h, d)
    else:
        assert kv_layout == "HND"
        page_shape = (h, page_size, d)
    if single:
        return torch.full((num_pages, 2) + page_shape, fill, dtype=dtype)
    return (
        torch.full((num_pages,) + page_shape, fill, dtype=dtype),
        torch.full((num_pages,) + page_shape, fill, dtype=dtype),
    )


def split_cache(cache, kv_layout=None):
    """(k_cache, v_cache) views of a single 5-D cache or a tuple."""
    if isinstance(cache, (tuple, list)):
        return cache[0], cache[1]
    return cache[:, 0], cache[:, 1]


def build_paged_kv(
    ks: Sequence[torch.Tensor],
    vs: Sequence[torch.Tensor],
    page_size: int,
    kv_layout: str = "NHD",
    single_tensor: bool = True,
    pad_fill: float = 100.0,
    extra_pages: int = 3,
) -> PagedKV:
    """Scatter per-request K/V ([kv_len_i, H, D] NHD) into a paged cache.

    Page ids are shuffled, the last page of each request is partly filled
    where the length allows, and a few pages are left unused. Slots that hold
    no token are filled with ``pad_fill`` (a large finite value by default, so
    that reading them changes the result; NaN to check that they are never
    read).
    """
    seq_lens = [int(k.shape[0]) for k in ks]
    h, d = ks[0].shape[1], ks[0].shape[2]
    dtype = ks[0].dtype
    indptr, indices, last, num_pages = make_page_table(seq_lens, page_size, extra_pages)
    if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        # fill via a wider type (fp8 has no fill kernels in every build)
        cache = _alloc_cache(num_pages, page_size, h, d, torch.float32, kv_layout, single_tensor, pad_fill)
        cache = cache.to(dtype) if single_tensor else (cache[0].to(dtype), cache[1].to(dtype))
    else:
        cache = _alloc_cache(num_pages, page_size, h, d, dtype, kv_layout, single_tensor, pad_fill)
    kc, vc = split_cache(cache)
    for b, (k, v) in enumerate(zip(ks, vs)):
        pages = indices[indptr[b] : indptr[b + 1]].tolist()
        for t in range(k.shape[0]):
            pg, off = pages[t // page_size], t % page_size
            if kv_layout == "NHD":
                kc[pg, off] = k[t]
                vc[pg, off] = v[t]
            else:
                kc[pg, :, off] = k[t]
                vc[pg, :, off] = v[t]
    return PagedKV(cache, indptr, indices, last, seq_lens, page_size, kv_layout, num_pages)


def gather_paged_kv(
    cache,
    indptr: torch.Tensor,
    indices: torch.Tensor,
    last_page_len: torch.Tensor,
    kv_layout: str = "NHD",
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Inverse of build_paged_kv: per-request (k, v) in NHD."""
    kc, vc = split_cache(cache)
    if kv_layout == "HND":
        kc = kc.transpose(1, 2)
        vc = vc.transpose(1, 2)
    page_size = kc.shape[1]
    out = []
    for b in range(len(indptr) - 1):
        pages = indices[int(indptr[b]) : int(indptr[b + 1])].long()
        n = (len(pages) - 1) * page_size + int(last_page_len[b]) if len(pages) else 0
        k = kc[pages].reshape(-1, kc.shape[2], kc.shape[3])[:n]
        v = vc[pages].reshape(-1, vc.shape[2], vc.shape[3])[:n]
        out.append((k.clone(), v.clone()))
    return out


def seq_lens_ref(indptr, last_page_len, page_size) -> List[int]:
    """Python reference for page.get_seq_lens."""
    ip = [int(x) for x in indptr]
    lp = [int(x) for x in last_page_len]
    return [max(ip[b + 1] - ip[b] - 1, 0) * page_size + lp[b] for b in range(len(lp))]


def batch_indices_positions_ref(append_indptr, seq_lens) -> Tuple[List[int], List[int]]:
    """Python reference for page.get_batch_indices_positions.

    Entry t of request b (appended at the end of a sequence that is
    seq_lens[b] long after the append) has position seq_lens[b] - append_len + t.
    """
    ip = [int(x) for x in append_indptr]
    bi, pos = [], []
    for b in range(len(ip) - 1):
        n = ip[b + 1] - ip[b]
        for t in range(n):
            bi.append(b)
            pos.append(int(seq_lens[b]) - n + t)
    return bi, pos


def append_ref(
    cache,
    append_key: torch.Tensor,
    append_value: torch.Tensor,
    batch_indices: Sequence[int],
    positions: Sequence[int],
    indices: torch.Tensor,
    indptr: torch.Tensor,
    kv_layout: str = "NHD",
):
    """Scatter reference for append_paged_kv_cache, applied to a clone of cache."""
    if isinstance(cache, (tuple, list)):
        cache = (cache[0].clone(), cache[1].clone())
    else:
        cache = cache.clone()
    kc, vc = split_cache(cache)
    page_size = kc.shape[1] if kv_layout == "NHD" else kc.shape[2]
    for t, (b, p) in enumerate(zip(batch_indices, positions)):
        pg = int(indices[int(indptr[b]) + p // page_size])
        off = p % page_size
        if kv_layout == "NHD":
            kc[pg, off] = append_key[t]
            vc[pg, off] = append_value[t]
        else:
            kc[pg, :, off] = append_key[t]
            vc[pg, :, off] = append_value[t]
    return cache


# --------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------


def packbits_little(mask: torch.Tensor) -> torch.Tensor:
    """Flatten a bool mask and pack it, little bit order per byte (numpy)."""
    arr = mask.to(torch.bool).reshape(-1).numpy()
    return torch.from_numpy(np.packbits(arr, bitorder="little").copy()).to(torch.uint8)


def segment_packbits_little(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """FlashInfer's batch layout: each request's flattened mask packed on its own
    (padded to a whole byte), the packed segments concatenated."""
    return torch.cat([packbits_little(m) for m in masks])


def random_mask(qo_len: int, kv_len: int, p: float = 0.6) -> torch.Tensor:
    return torch.rand(qo_len, kv_len) < p


def climbing_scores(qo_len: int, kv_len: int, hq: int, hkv: int, d: int, dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """(q, k) whose attention rows' running maxima climb along the kv sequence: key norms ramp
    from 0.25 to 3.25 (the maxima creep up over most tiles, a few base-2 units in all), and at
    3/4 of the sequence one key along q's common direction raises most rows' maximum by ~10-20
    base-2 units at once. Kernels that rescale O only past some slack must stay exact on both."""
    q = torch.randn(qo_len, hq, d) + 0.5
    ramp = 0.25 + 3.0 * torch.arange(kv_len, dtype=torch.float32) / max(1, kv_len - 1)
    k = torch.randn(kv_len, hkv, d) * ramp[:, None, None]
    k[(3 * kv_len) // 4] = 3.0
    return q.to(dtype), k.to(dtype)


# --------------------------------------------------------------------------
# Merge
# --------------------------------------------------------------------------


def merge_ref(vs: Sequence[torch.Tensor], ss: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merge attention states in base 2.

    vs: [L, H, D] each, ss: [L, H] each (base-2 lse). Returns float64
    (v, s) with s = log2(sum_i 2^s_i) and v = sum_i 2^(s_i - s) v_i.
    """
    s = torch.stack([x.to(torch.float64) for x in ss])  # [N, L, H]
    v = torch.stack([x.to(torch.float64) for x in vs])  # [N, L, H, D]
    m = s.max(dim=0).values
    m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    w = torch.exp2(s - m_safe)  # [N, L, H]
    tot = w.sum(dim=0)
    s_out = torch.log2(tot) + m_safe
    v_out = (w.unsqueeze(-1) * v).sum(dim=0) / tot.clamp_min(1e-300).unsqueeze(-1)
    return v_out, s_out
