"""The bucketed algorithm in the `triton` backend (docs/DESIGN.md §5b; docs/MATH.md, "The bucketed
algorithm" and "On the GPU"): the twin of triton_backend.py's pairwise negative sweeps, and of
the CUDA kernels in csrc/cuda/rank_sort_bucketed_kernels.cuh, whose design it mirrors.

A row goes bucketed when triton_backend._compact_kernel chooses it on the device (from n, ñ,
finiteness, δ-resolution, the capacity below and the cost model: no host sync). For such a row
only the positive-negative terms change:

  F_i (and F'_i) of every positive   from a histogram of the kept negatives over the 2n
                                      breakpoints u_k ± δ, instead of n·ñ pairs;
  the gradient of every negative      α[q] + β[q]·u from prefix sums over the sorted positives,
                                      instead of ñ·n pairs.

The positive-positive terms stay on pass A / pass B's P×P tiles (the compaction gives the row
nkeep = 0, so those passes sweep only its positives). Kernels, launched by
``launch_histogram`` (before pass A) and ``launch_gradient`` (after pass B):

  _bucket_prep_kernel    one program per row: tl.sort of the positives as int64 keys
                         (order-preserving bits of the float32 score high, slot low), scores
                         relative to the median positive in float64, the 2n merged breakpoint
                         keys by one branchless binary search per key into the other list
                         (lo first on ties, as the CPU's merge), lo counts, ql / qh, the
                         row's fixed point, a zeroed histogram.
  _bucket_search_kernel  programs (row, g) over chunks of negatives: one branchless
                         upper-bound search per negative (a static number of tl.load
                         gathers), its bucket kept, and integer atomics into the histogram:
                         int32 counts and Σ(s − off) in int64 fixed point (FixedPoint of
                         csrc/rank_sort_bucketed_math.h). Integer addition is associative, so
                         any atomic order gives the same bits: no floating-point atomics.
  _bucket_scan_kernel    one program per row: integer suffix sums (exact), then F_i (F'_i)
                         of every positive, read by pass A.
  _bucket_coef_kernel    (gradient) one program per row: prefix sums of pass A's r_i (∂F_i)
                         and r_i·u_i over the sorted positives, tl.cumsum over fixed tiles
                         with an in-order carry (the same bits every run).
  _bucket_grad_kernel    (gradient) programs (row, g): each negative's (α[q] + β[q]·u)/n.

float64 rows stay pairwise here: a (float64 score, slot) pair does not pack into one 64-bit
sort key, and tl.sort sorts a single tensor (no argsort). Grids depend on M, L and the SM
count only; extra memory is O(M·L) (per-row capacity ``max_positives``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# The largest positive block one program sorts (tl.sort of one block per row).
SORT_MAX = 4096


def max_positives(length: int) -> int:
    """The most positives a bucketed row of ``length`` may have (its sort block and its
    workspace; rows with more stay pairwise): at most L/8 (at least 64) of the row, and at
    most SORT_MAX, as csrc/cuda's np_cap for float32. The benchmark shapes have n ≤ L/20."""
    return max(1, min(length, SORT_MAX, max(64, -(-length // 8))))


def supports(acc_dtype: torch.dtype) -> bool:
    """Whether rows of this accumulation dtype can go bucketed (float64 cannot: see above)."""
    return acc_dtype == torch.float32


# ----------------------------------------------------------------------------- helpers


@triton.jit
def _next_up(x):
    """nextafter(x, +inf) for finite float64 x, by its bits (exact; ±0 -> the least subnormal)."""
    b = x.to(tl.int64, bitcast=True)
    r = tl.where(x > 0, b + 1, tl.where(x < 0, b - 1, 1))
    return r.to(tl.float64, bitcast=True)


@triton.jit
def _ramp_mass(c, cs, u, inv2d):
    """rank_sort_bucketed_math.h's ramp_mass: an empty band gives an exact 0."""
    return tl.where(c == 0.0, 0.0, (cs - u * c) * inv2d + 0.5 * c)


@triton.jit
def _to_fixed(v, inv_unit):
    """round(v / unit) to int64, halves away from 0 (|v / unit| < 2^62: FixedPoint; the C++
    to_fixed's llrint rounds halves to even: at most one unit apart on exact halves, and
    deterministic either way)."""
    x = v * inv_unit
    t = x.to(tl.int64)              # toward zero, exact where |x| ≥ 2^52
    f = x - t.to(tl.float64)
    return t + (f >= 0.5).to(tl.int64) - (f <= -0.5).to(tl.int64)


@triton.jit
def _inv2d(delta, HARD: tl.constexpr):
    """1/(2δ) in float64 from the float32 δ every kernel sees (0 for the step, δ = 0)."""
    if HARD:
        r = tl.zeros([], tl.float64)
    else:
        r = 0.5 / (delta + tl.zeros([], tl.float64))
    return r


@triton.jit
def _pow2(e):
    """2^e as a float64, e an int64 within the normal exponents."""
    return ((e + 1023) << 52).to(tl.float64, bitcast=True)


# ----------------------------------------------------------------------------- kernels


@triton.jit(do_not_specialize=["L", "NP", "NK"])
def _bucket_prep_kernel(key_ptr, npos_ptr, bsel_ptr, boff_ptr, bfix_ptr, sorder_ptr, su_ptr,
                        ql_ptr, qh_ptr, bkey_ptr, lob_ptr, hcnt_ptr, hsum_ptr,
                        L, NP, NK, delta,
                        NPB: tl.constexpr, LOGP: tl.constexpr, BT: tl.constexpr):
    # δ = 0 is a branch on the scalar, not a constexpr: this kernel's tl.sort makes it the
    # slowest to compile (tests/test_gpu_compile.py), and the branch costs nothing.
    row = tl.program_id(0).to(tl.int64)
    nn = tl.load(bsel_ptr + row)
    if nn >= 0:    # a bucketed row (uniform over the program)
        n = tl.load(npos_ptr + row)
        base = row * L
        pr = row * NP
        kr = row * NK
        k = tl.arange(0, NPB)
        k_ok = k < n
        s = tl.load(key_ptr + base + k, mask=k_ok, other=0.0)
        # (score, slot) in one int64: the float32 bits made order-preserving as a signed
        # int32 (negative scores: the magnitude bits flipped), then the slot (index order),
        # so ties sort by slot as the CPU kernel's sort. Bucketed rows have finite scores.
        # −0.0 and +0.0 compare equal (then by slot), as in the CPU's and CUDA's sorts.
        bits = tl.where(s == 0.0, 0, s.to(tl.int32, bitcast=True))
        ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
        packed = (ordered.to(tl.int64) << 32) | k.to(tl.int64)
        packed = tl.sort(tl.where(k_ok, packed, 0x7FFFFFFFFFFFFFFF))
        slot = tl.where(k_ok, (packed - ((packed >> 32) << 32)).to(tl.int32), 0)
        s_sorted = tl.load(key_ptr + base + slot, mask=k_ok, other=0.0).to(tl.float64)
        # Scores relative to the median positive, in float64 (as the CPU and CUDA kernels:
        # the same rounding where a difference is not exact).
        off = tl.sum(tl.where(k == n // 2, s_sorted, 0.0), 0)
        u = s_sorted - off
        tl.store(sorder_ptr + pr + k, slot, mask=k_ok)
        tl.store(su_ptr + pr + k, u, mask=k_ok)
        d = delta + tl.zeros([], tl.float64)
        lanes = tl.arange(0, BT)
        tl.debug_barrier()     # su is read back below, by other lanes
        # In tiles of sorted positions (the NPB-wide vectors above are the sort's alone).
        for p0 in range(0, n, BT):
            p = p0 + lanes
            ok_k = p < n
            v = tl.load(su_ptr + pr + p, mask=ok_k, other=0.0)
            if delta == 0.0:
                # δ = 0: the keys are the scores, and a negative equal to u_k counts (H(0) = 1).
                tl.store(bkey_ptr + kr + p, v, mask=ok_k)
                tl.store(ql_ptr + pr + p, p + 1, mask=ok_k)
                tl.store(qh_ptr + pr + p, p + 1, mask=ok_k)
            else:
                lo = _next_up(v - d)
                hi = v + d
                # Merge of the ascending lo and hi lists, lo first on ties: lo_k lands after
                # the hi keys strictly below it, hi_k after the lo keys at or below it; each
                # count is a branchless binary search (a static number of gathers).
                c_lo = tl.zeros([BT], tl.int32)
                c_hi = tl.zeros([BT], tl.int32)
                for t in tl.static_range(LOGP):
                    half = 1 << (LOGP - 1 - t)
                    cand = c_lo + half
                    ok = ok_k & (cand <= n)
                    x = tl.load(su_ptr + pr + cand - 1, mask=ok, other=0.0)
                    c_lo = tl.where(ok & (x + d < lo), cand, c_lo)
                    cand = c_hi + half
                    ok = ok_k & (cand <= n)
                    x = tl.load(su_ptr + pr + cand - 1, mask=ok, other=0.0)
                    c_hi = tl.where(ok & (_next_up(x - d) <= hi), cand, c_hi)
                at_lo = p + c_lo
                at_hi = p + c_hi
                tl.store(bkey_ptr + kr + at_lo, lo, mask=ok_k)
                tl.store(bkey_ptr + kr + at_hi, hi, mask=ok_k)
                tl.store(ql_ptr + pr + p, at_lo + 1, mask=ok_k)
                tl.store(qh_ptr + pr + p, at_hi + 1, mask=ok_k)
                # lob[q]: lo keys among the first q merged keys (the CPU's prefix count).
                tl.store(lob_ptr + kr + at_lo + 1, p + 1, mask=ok_k)
                tl.store(lob_ptr + kr + at_hi + 1, at_hi - p, mask=ok_k)
        tl.store(lob_ptr + kr, 0)
        # The fixed point of this row's Σ s: from the largest |s − off| over its negatives.
        vmax = tl.zeros([BT], tl.float64)
        for t0 in range(0, nn, BT):
            j = t0 + lanes
            v = tl.load(key_ptr + base + n + j, mask=j < nn, other=0.0).to(tl.float64)
            vmax = tl.maximum(vmax, tl.where(j < nn, tl.abs(v - off), 0.0))
        bound = tl.max(vmax, 0) * tl.maximum(nn, 1).to(tl.float64)
        # frexp: bound < 2^ex (bound = 0: ex = 0), clamped so that unit stays normal.
        ex = ((bound.to(tl.int64, bitcast=True) >> 52) & 0x7FF) - 1022
        ex = tl.where(bound > 0.0, tl.maximum(ex, -960), 0)
        tl.store(bfix_ptr + 2 * row, _pow2(ex - 62))
        tl.store(bfix_ptr + 2 * row + 1, _pow2(62 - ex))
        tl.store(boff_ptr + row, off)
        nk = tl.where(delta == 0.0, n, 2 * n)
        for q0 in range(0, nk + 2, BT):
            q = q0 + lanes
            tl.store(hcnt_ptr + kr + q, tl.zeros([BT], tl.int32), mask=q < nk + 2)
            tl.store(hsum_ptr + kr + q, tl.zeros([BT], tl.int64), mask=q < nk + 2)


@triton.jit(do_not_specialize=["L", "NK"])
def _bucket_search_kernel(key_ptr, npos_ptr, bsel_ptr, boff_ptr, bfix_ptr, bkey_ptr, hcnt_ptr,
                          hsum_ptr, qneg_ptr, L, NK,
                          BS: tl.constexpr, LOGK: tl.constexpr, HARD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    nn = tl.load(bsel_ptr + row)
    n = tl.load(npos_ptr + row)
    nk = n if HARD else 2 * n
    base = row * L
    kr = row * NK
    off = tl.load(boff_ptr + row, mask=nn >= 0, other=0.0)
    inv_unit = tl.load(bfix_ptr + 2 * row + 1, mask=nn >= 0, other=0.0)
    # Pairwise rows (nn = −1) have no chunks.
    for c in range(tl.program_id(1), tl.cdiv(tl.maximum(nn, 0), BS), tl.num_programs(1)):
        j = c * BS + tl.arange(0, BS)
        ok = j < nn
        slot = n + j
        u = tl.load(key_ptr + base + slot, mask=ok, other=0.0).to(tl.float64) - off
        # q = #{key ≤ u} (upper bound), branch-free: a static number of gathers.
        q = tl.zeros([BS], tl.int32)
        for t in tl.static_range(LOGK):
            cand = q + (1 << (LOGK - 1 - t))
            inb = ok & (cand <= nk)
            kv = tl.load(bkey_ptr + kr + cand - 1, mask=inb, other=0.0)
            q = tl.where(inb & (kv <= u), cand, q)
        fx = _to_fixed(u, inv_unit)
        tl.store(qneg_ptr + base + slot, q, mask=ok)
        # Negatives above every ramp all land in the last bucket (an untrained head's bright
        # background): summed here first, one atomic pair per chunk, not a hot spot.
        top = ok & (q == nk)
        rest = ok & (q != nk)
        tl.atomic_add(hcnt_ptr + kr + q, tl.full([BS], 1, tl.int32), mask=rest, sem="relaxed")
        tl.atomic_add(hsum_ptr + kr + q, fx, mask=rest, sem="relaxed")
        top_n = tl.sum(top.to(tl.int32), 0)
        top_s = tl.sum(tl.where(top, fx, 0), 0)
        tl.atomic_add(hcnt_ptr + kr + nk, top_n, mask=top_n > 0, sem="relaxed")
        tl.atomic_add(hsum_ptr + kr + nk, top_s, mask=top_n > 0, sem="relaxed")


@triton.jit(do_not_specialize=["NP", "NK"])
def _bucket_scan_kernel(npos_ptr, bsel_ptr, bfix_ptr, sorder_ptr, su_ptr, ql_ptr, qh_ptr,
                        hcnt_ptr, hsum_ptr, fb_ptr, fbd_ptr, NP, NK, delta,
                        BT: tl.constexpr, HARD: tl.constexpr, EXACT: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    nn = tl.load(bsel_ptr + row)
    if nn >= 0:
        inv2d = _inv2d(delta, HARD)
        n = tl.load(npos_ptr + row)
        nb = (n if HARD else 2 * n) + 1
        pr = row * NP
        kr = row * NK
        lanes = tl.arange(0, BT)
        # Suffix sums over the buckets (entry q: Σ over buckets ≥ q) as total − prefix, in
        # integers (wrapping like two's complement; the true sums fit: FixedPoint), so the
        # tiling cannot change a bit.
        tot_c = tl.zeros([BT], tl.int64)
        tot_s = tl.zeros([BT], tl.int64)
        for q0 in range(0, nb, BT):
            q = q0 + lanes
            tot_c += tl.load(hcnt_ptr + kr + q, mask=q < nb, other=0).to(tl.int64)
            tot_s += tl.load(hsum_ptr + kr + q, mask=q < nb, other=0)
        run_c = tl.sum(tot_c, 0)
        run_s = tl.sum(tot_s, 0)
        for q0 in range(0, nb, BT):
            q = q0 + lanes
            c = tl.load(hcnt_ptr + kr + q, mask=q < nb, other=0).to(tl.int64)
            s = tl.load(hsum_ptr + kr + q, mask=q < nb, other=0)
            tl.store(hcnt_ptr + kr + q, (run_c - tl.cumsum(c, 0) + c).to(tl.int32), mask=q < nb)
            tl.store(hsum_ptr + kr + q, run_s - tl.cumsum(s, 0) + s, mask=q < nb)
            run_c -= tl.sum(c, 0)
            run_s -= tl.sum(s, 0)
        tl.debug_barrier()     # the suffix sums are gathered below
        unit = tl.load(bfix_ptr + 2 * row)
        # F_k = (negatives at or past hi_k) + ramp mass of those in [lo_k, hi_k).
        for k0 in range(0, n, BT):
            k = k0 + lanes
            ok = k < n
            slot = tl.load(sorder_ptr + pr + k, mask=ok, other=0)
            u = tl.load(su_ptr + pr + k, mask=ok, other=0.0)
            ql = tl.load(ql_ptr + pr + k, mask=ok, other=0)
            qh = tl.load(qh_ptr + pr + k, mask=ok, other=0)
            c_l = tl.load(hcnt_ptr + kr + ql, mask=ok, other=0)
            c_h = tl.load(hcnt_ptr + kr + qh, mask=ok, other=0)
            s_l = tl.load(hsum_ptr + kr + ql, mask=ok, other=0)
            s_h = tl.load(hsum_ptr + kr + qh, mask=ok, other=0)
            ramp_n = (c_l - c_h).to(tl.float64)
            ramp_s = (s_l - s_h).to(tl.float64) * unit
            f = c_h.to(tl.float64) + _ramp_mass(ramp_n, ramp_s, u, inv2d)
            tl.store(fb_ptr + pr + slot, f.to(fb_ptr.dtype.element_ty), mask=ok)
            if EXACT:
                # The band count: pass A's fp_ramp (it applies 1/(2δ) itself).
                tl.store(fbd_ptr + pr + slot, ramp_n.to(fbd_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=["L", "NP"])
def _bucket_coef_kernel(npos_ptr, bsel_ptr, sorder_ptr, su_ptr, coef_ptr, pre_ptr, L, NP,
                        BT: tl.constexpr, NC: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    nn = tl.load(bsel_ptr + row)
    if nn >= 0:
        n = tl.load(npos_ptr + row)
        pr = row * NP
        cbase = row * NC * L.to(tl.int64)     # plane 0: r_i (identity) or ∂F_i (exact)
        p0 = pre_ptr + row * 2 * (NP + 1)
        p1 = p0 + NP + 1
        lanes = tl.arange(0, BT)
        tl.store(p0, 0.0)
        tl.store(p1, 0.0)
        run0 = tl.zeros([], tl.float64)
        run1 = tl.zeros([], tl.float64)
        # Ordered prefix sums over sorted positions: tl.cumsum of fixed tiles, then the
        # carry in tile order (the carry is the tile's last prefix, so pre stays monotone
        # in its summation): the same bits on every run.
        for k0 in range(0, n, BT):
            k = k0 + lanes
            ok = k < n
            slot = tl.load(sorder_ptr + pr + k, mask=ok, other=0)
            r = tl.load(coef_ptr + cbase + slot, mask=ok, other=0.0).to(tl.float64)
            ru = r * tl.load(su_ptr + pr + k, mask=ok, other=0.0)
            c0 = run0 + tl.cumsum(r, 0)
            c1 = run1 + tl.cumsum(ru, 0)
            tl.store(p0 + k + 1, c0, mask=ok)
            tl.store(p1 + k + 1, c1, mask=ok)
            run0 = tl.sum(tl.where(lanes == BT - 1, c0, 0.0), 0)
            run1 = tl.sum(tl.where(lanes == BT - 1, c1, 0.0), 0)


@triton.jit(do_not_specialize=["L", "NP", "NK"])
def _bucket_grad_kernel(key_ptr, idx_ptr, npos_ptr, bsel_ptr, boff_ptr, lob_ptr, qneg_ptr,
                        pre_ptr, grad_ptr, L, NP, NK, delta,
                        BS: tl.constexpr, HARD: tl.constexpr, EXACT: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    inv2d = _inv2d(delta, HARD)
    nn = tl.load(bsel_ptr + row)
    n = tl.load(npos_ptr + row)
    base = row * L
    kr = row * NK
    p0 = pre_ptr + row * 2 * (NP + 1)
    p1 = p0 + NP + 1
    off = tl.load(boff_ptr + row, mask=nn >= 0, other=0.0)
    inv_n = 1.0 / tl.maximum(n, 1).to(tl.float64)
    for c in range(tl.program_id(1), tl.cdiv(tl.maximum(nn, 0), BS), tl.num_programs(1)):
        j = c * BS + tl.arange(0, BS)
        ok = j < nn
        slot = n + j
        q = tl.load(qneg_ptr + base + slot, mask=ok, other=0)
        u = tl.load(key_ptr + base + slot, mask=ok, other=0.0).to(tl.float64) - off
        # Bucket q: positives [0, b) saturated, [b, a) on their ramp (MATH.md).
        if HARD:
            g = tl.load(p0 + q, mask=ok, other=0.0)
        else:
            a = tl.load(lob_ptr + kr + q, mask=ok, other=0)
            b = q - a
            r_b = tl.load(p0 + b, mask=ok, other=0.0)
            dr = tl.load(p0 + a, mask=ok, other=0.0) - r_b
            if EXACT:
                g = dr * inv2d
            else:
                du = tl.load(p1 + a, mask=ok, other=0.0) - tl.load(p1 + b, mask=ok, other=0.0)
                g = (r_b + 0.5 * dr - du * inv2d) + (dr * inv2d) * u
        dst = tl.load(idx_ptr + base + slot, mask=ok, other=0)
        tl.store(grad_ptr + base + dst, (g * inv_n).to(grad_ptr.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------- launches


def _log2(x: int) -> int:
    return max(0, (x - 1).bit_length())


@dataclass
class Workspace:
    """The bucketed rows' buffers: [M] per row, [M, NP] per positive, [M, NK] per bucket,
    [M, L] per compacted slot (O(M·L): NP ≤ max(64, L/8), NK = 2·NP + 2)."""
    bsel: torch.Tensor      # [M]      kept negatives of a bucketed row; −1: pairwise
    boff: torch.Tensor      # [M]      the row offset (median positive score), float64
    bfix: torch.Tensor      # [M, 2]   fixed point (unit, 1/unit) of the histogram sums
    sorder: torch.Tensor    # [M, NP]  sorted position -> slot of the positive
    su: torch.Tensor        # [M, NP]  sorted scores relative to boff, float64
    ql: torch.Tensor        # [M, NP]  first bucket past the positive's lo key
    qh: torch.Tensor        # [M, NP]  ... past its hi key
    bkey: torch.Tensor      # [M, NK]  breakpoint keys, ascending, float64
    lob: torch.Tensor       # [M, NK]  lo keys among the first q keys
    hcnt: torch.Tensor      # [M, NK]  negatives per bucket, then suffix sums (int32)
    hsum: torch.Tensor      # [M, NK]  Σ (s − boff) per bucket in fixed point (int64)
    qneg: torch.Tensor      # [M, L]   bucket of each kept negative slot
    fb: torch.Tensor        # [M, NP]  F_i per positive slot, read by pass A
    fbd: torch.Tensor       # [M, NP]  band count of F'_i (exact mode; else [1])
    pre: torch.Tensor       # [M, 2, NP + 1] prefix sums of r_i (∂F_i), r_i·u_i (gradient)
    np_: int
    nk: int


def workspace(m: int, length: int, exact: bool, need_grad: bool, device) -> Workspace:
    np_ = max_positives(length)
    nk = 2 * np_ + 2
    i32, i64, f32, f64 = torch.int32, torch.int64, torch.float32, torch.float64

    def e(shape, dt):
        return torch.empty(shape, dtype=dt, device=device)

    return Workspace(
        bsel=e(m, i32), boff=e(m, f64), bfix=e((m, 2), f64), sorder=e((m, np_), i32),
        su=e((m, np_), f64), ql=e((m, np_), i32), qh=e((m, np_), i32), bkey=e((m, nk), f64),
        lob=e((m, nk), i32), hcnt=e((m, nk), i32), hsum=e((m, nk), i64),
        qneg=e((m, length), i32), fb=e((m, np_), f32),
        fbd=e((m, np_) if exact else (1,), f32),
        pre=e((m, 2, np_ + 1) if need_grad else (1,), f64), np_=np_, nk=nk)


def _sort_warps(npb: int) -> int:
    # tl.sort holds the whole block in registers: ≤ 8 int64 keys per thread (4096 keys in
    # 4 warps spilled 1.6 KB on sm_80 and took minutes in ptxas); at least 8 warps, so that
    # the merge tiles (1024) are 4 per thread (8 spilled 4 bytes under triton 3.6).
    return max(8, min(16, npb // 256))


# Warps of the per-negative kernels: 1024-element chunks, 4 per thread (8 spilled 4 bytes in
# the search kernel under triton 3.6 on sm_80).
_CHUNK_WARPS = 8


def _programs(m: int, chunks: int, sms: int, override) -> int:
    # As triton_backend._programs_per_row: ~32 programs per SM in all.
    if override is not None:
        return max(1, min(chunks, override))
    return max(1, min(chunks, triton.cdiv(32 * sms, max(m, 1)), 16384))


def launch_histogram(ws: Workspace, key, npos, m: int, length: int, delta: float, exact: bool,
                     *, chunk: int, tile: int, sms: int, programs=None):
    """Before pass A: sort, keys, histogram, F (F') of every bucketed row's positives."""
    hard = delta == 0.0
    npb = triton.next_power_of_2(ws.np_)
    _bucket_prep_kernel[(m,)](
        key, npos, ws.bsel, ws.boff, ws.bfix, ws.sorder, ws.su, ws.ql, ws.qh, ws.bkey, ws.lob,
        ws.hcnt, ws.hsum, length, ws.np_, ws.nk, delta,
        NPB=npb, LOGP=_log2(npb + 1), BT=tile, num_warps=_sort_warps(npb))
    g = _programs(m, triton.cdiv(length, chunk), sms, programs)
    _bucket_search_kernel[(m, g)](
        key, npos, ws.bsel, ws.boff, ws.bfix, ws.bkey, ws.hcnt, ws.hsum, ws.qneg, length, ws.nk,
        BS=chunk, LOGK=_log2(2 * npb + 1), HARD=hard, num_warps=_CHUNK_WARPS)
    _bucket_scan_kernel[(m,)](
        npos, ws.bsel, ws.bfix, ws.sorder, ws.su, ws.ql, ws.qh, ws.hcnt, ws.hsum, ws.fb, ws.fbd,
        ws.np_, ws.nk, delta, BT=tile, HARD=hard, EXACT=exact, num_warps=4)


def launch_gradient(ws: Workspace, key, idx, npos, coef, grad, m: int, length: int,
                    delta: float, exact: bool, *, chunk: int, tile: int, sms: int,
                    programs=None):
    """After pass A (its coefficients): the gradient of every bucketed row's negatives."""
    hard = delta == 0.0
    _bucket_coef_kernel[(m,)](
        npos, ws.bsel, ws.sorder, ws.su, coef, ws.pre, length, ws.np_,
        BT=tile, NC=6 if exact else 3, num_warps=4)
    g = _programs(m, triton.cdiv(length, chunk), sms, programs)
    _bucket_grad_kernel[(m, g)](
        key, idx, npos, ws.bsel, ws.boff, ws.lob, ws.qneg, ws.pre, grad, length, ws.np_, ws.nk,
        delta, BS=chunk, HARD=hard, EXACT=exact, num_warps=_CHUNK_WARPS)
