"""The `triton` backend: the Rank & Sort core (SPEC §2, §5) as three Triton kernels.

Every sum, coefficient and threshold is the one of docs/MATH.md. One call launches:

1. ``_compact_kernel``, one program per row. A first sweep counts the positives and finds the
   pruning bound ``s_min − δ``; a second sweep compacts the row, with ``tl.cumsum`` giving each
   element its slot: the positives in slots ``[0, n)`` (score, label, original index), then the
   negatives that are *not* pruned in ``[n, n + n_keep)`` (score, index). A pruned negative
   gets its gradient, 0, written here and is never looked at again.
2. ``_pass_a_kernel``, programs ``(row, g)``; each walks the row's blocks of ``BP`` positives
   ``g, g + G, ...`` (bounds loaded from ``npos``; no host branch on data). Per block it
   streams the unpruned negatives in tiles of ``BL`` into one ``[BP, BL]`` register
   accumulator (F; and the count behind F' in exact mode), then the positives in tiles of
   ``BL2`` for T, Z, C, D (and A', C', T', D'). It writes the per-positive coefficients of
   pass B (identity: r, q, self; exact: ∂F, ∂A, ∂C, ∂T, ∂D, self) and the block's Σ ℓR and
   Σ eS into its own slot of a partial-sum buffer.
3. ``_pass_b_kernel``, programs ``(row, p)``: program ``(row, 0)`` also sums the partials in
   block order into ``rank`` and ``sort``. With a gradient, programs ``p < NBN`` walk blocks
   of unpruned negatives and stream all positives (``g_j = Σ_i H(x_ij) r_i``, or
   ``Σ_i H'(x_ij) ∂F_i``); the others walk blocks of positives and stream all positives (the
   P×P part with its self term). Each writes ``g / n`` to the element's original index.

With ``algorithm="bucketed"`` or ``"auto"`` (float32 accumulation; float64 rows stay
pairwise), the compaction also chooses each row's algorithm on the device (SPEC §5b, the
rules of the CUDA backend) and gives a bucketed row ``n_keep = 0``, so the passes above sweep
only its positives; triton_bucketed.py's kernels supply its F (F') to pass A and its
negatives' gradient after pass B. ``"pairwise"`` launches the three kernels above only.

Every output element is written by exactly one program and every sum is reduced in a fixed
order: no atomics, bitwise-identical results run after run. The grid depends on M, L and
the SM count only; which program handles a block never changes its arithmetic, so results do
not depend on the SM count either. Extra memory: 24 B (identity) or 36 B (exact) per element
of the [M, L] input, in float32 (twice for float64).

float64 scores are supported natively (accumulated in float64, the labels' dtype); δ and τ
reach the kernels as float32 scalars, exact for the usual values (0, 0.25, 0.5, 1).

Block sizes are fixed per row length (no autotuning: an autotuner's pick can differ from one
process to the next, and a different tile changes the summation order, so results would not
be bitwise reproducible across runs).
"""
from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import cost_model
from . import sm_count as _sm_count
from . import triton_bucketed as tb

EPS = 1e-10
_EPS = tl.constexpr(EPS)    # the ε of SPEC §2, as the kernels see it



def is_available(device_type: str) -> bool:
    if device_type == "cuda":
        return torch.cuda.is_available()
    if device_type == "cpu":
        # CPU tensors run only under the interpreter (TRITON_INTERPRET=1 when triton.jit ran).
        return _INTERPRETED
    return False


# ----------------------------------------------------------------------------- per-pair math


@triton.jit
def _step(x, half_inv, DELTA_ZERO: tl.constexpr):
    """H(x): clamp(x/(2δ) + 1/2, 0, 1), or [x ≥ 0] for δ = 0; NaN stays NaN in both."""
    if DELTA_ZERO:
        h = tl.where(x < 0, 0.0, tl.where(x >= 0, 1.0, x))
    else:
        # A plain min/max would turn NaN into 0 on the GPU and hide a NaN score.
        h = tl.clamp(x * half_inv + 0.5, 0.0, 1.0, propagate_nan=tl.PropagateNan.ALL)
    return h


@triton.jit
def _f64(x):
    """A scalar argument (float32 on the GPU, a Python float in the interpreter) as float64."""
    return x + tl.zeros([], tl.float64)


@triton.jit
def _in_ramp(x, delta):
    """[|x| < δ] = 2δ·H'(x); multiplied (not selected) into sums so NaN coefficients spread."""
    return (tl.abs(x) < delta).to(x.dtype)


@triton.jit
def _div(a, b):
    """a / b rounded to nearest. Triton lowers a float32 `/` to div.full.f32 on the GPU (up to
    2 ulp off, where the interpreter, the CPU and the CUDA backends divide exactly); these
    divisions run once per positive, not per pair, so the exact one costs nothing."""
    if b.dtype == tl.float32:
        return tl.div_rn(a, b)
    else:
        return a / b


# ----------------------------------------------------------------------------- kernels


@triton.jit(do_not_specialize=["algorithm", "max_pos"])
def _compact_kernel(s_ptr, y_ptr, key_ptr, idx_ptr, plab_ptr, grad_ptr, npos_ptr, nkeep_ptr,
                    bsel_ptr, L, pos_thr, delta, algorithm, max_pos,
                    cost_neg, cost_pos, cost_pp, cost_bpp,
                    BLOCK: tl.constexpr, WRITE_GRAD: tl.constexpr, CHOOSE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = row * L
    acc_ty = plab_ptr.dtype.element_ty
    lanes = tl.arange(0, BLOCK)

    # Sweep 1: positive count and the lowest positive score.
    low = tl.full([BLOCK], float("inf"), acc_ty)
    count = tl.zeros([BLOCK], tl.int32)
    nan_pos = tl.zeros([BLOCK], tl.int32)
    for t0 in range(0, L, BLOCK):
        offs = t0 + lanes
        inb = offs < L
        s = tl.load(s_ptr + base + offs, mask=inb, other=0.0).to(acc_ty)
        y = tl.load(y_ptr + base + offs, mask=inb, other=0.0)
        pos = inb & (y > pos_thr)
        count += pos.to(tl.int32)
        nan_pos = tl.maximum(nan_pos, (pos & (s != s)).to(tl.int32))
        low = tl.minimum(low, tl.where(pos & (s == s), s, float("inf")))
    n = tl.sum(count, 0)
    # A NaN positive score makes the bound NaN in spirit: nothing is pruned.
    bound = tl.where(tl.max(nan_pos, 0) > 0, float("-inf"), tl.min(low, 0) - delta)
    # An empty row (low = +inf) prunes all but NaN / +inf scores; pass B gives those 0.

    # Sweep 2: positives to slots [0, n), unpruned negatives to [n, n + n_keep).
    p_run = n * 0
    k_run = n * 0
    span = tl.max(tl.zeros([BLOCK], acc_ty), 0)           # max |s| over the live elements
    nonfinite = tl.max(tl.zeros([BLOCK], tl.int32), 0)    # a live score is NaN or ±inf
    for t0 in range(0, L, BLOCK):
        offs = t0 + lanes
        inb = offs < L
        s = tl.load(s_ptr + base + offs, mask=inb, other=0.0).to(acc_ty)
        y = tl.load(y_ptr + base + offs, mask=inb, other=0.0)
        pos = inb & (y > pos_thr)
        # `not (s < bound)`: a NaN score is never pruned.
        keep = inb & (y <= pos_thr) & ((s < bound) == 0)
        pos_i = pos.to(tl.int32)
        keep_i = keep.to(tl.int32)
        slot = tl.where(pos, p_run + tl.cumsum(pos_i, 0) - 1, n + k_run + tl.cumsum(keep_i, 0) - 1)
        live = pos | keep
        tl.store(key_ptr + base + slot, s, mask=live)
        tl.store(idx_ptr + base + slot, offs, mask=live)
        tl.store(plab_ptr + base + slot, y, mask=pos)
        if WRITE_GRAD:
            tl.store(grad_ptr + base + offs, tl.zeros([BLOCK], grad_ptr.dtype.element_ty),
                     mask=inb & (live == 0))
        p_run += tl.sum(pos_i, 0)
        k_run += tl.sum(keep_i, 0)
        if CHOOSE:
            # Reduced per tile: two [BLOCK] accumulators spilled under triton 3.6.
            mag = tl.abs(s)
            span = tl.maximum(span, tl.max(tl.where(live & (mag == mag), mag, 0.0), 0))
            nonfinite = tl.maximum(nonfinite, tl.max(
                (live & ((mag < float("inf")) == 0)).to(tl.int32), 0))
    tl.store(npos_ptr + row, n)
    if CHOOSE:
        # The row's algorithm (SPEC §5b), chosen here from its counts (no host sync), by the
        # rules of the CUDA compact_kernel: bucketed when forced (algorithm 1) or preferred by
        # the cost model (2, cost_model.prefers_bucketed with the constants passed), provided
        # its live scores are finite, δ resolves at their scale (δ ≥ 2^-20·max|s|) and its
        # positives fit the sort (n ≤ max_pos). A bucketed row gets bsel = its kept negatives
        # and nkeep = 0 (pass A / pass B then sweep its positives only); others bsel = −1.
        bad = nonfinite > 0
        resolves = (delta == 0.0) | (_f64(delta) >= span.to(tl.float64) * (2.0 ** -20))
        nf = n.to(tl.float64)
        kf = k_run.to(tl.float64)
        steps = tl.log2(2.0 * tl.maximum(n, 1).to(tl.float64))   # as cost_model: float64
        pairwise = nf * (kf + _f64(cost_pp) * nf)
        bucketed = (steps * (_f64(cost_neg) * kf + _f64(cost_pos) * nf)
                    + _f64(cost_bpp) * nf * nf)
        prefers = (n >= 2) & (pairwise > bucketed)
        take = (n > 0) & (n <= max_pos) & (bad == 0) & resolves & ((algorithm == 1) | prefers)
        tl.store(bsel_ptr + row, tl.where(take, k_run, -1))
        tl.store(nkeep_ptr + row, tl.where(take, 0, k_run))
    else:
        tl.store(nkeep_ptr + row, k_run)


# L and the block counts are not specialised (divisibility, == 1): the row's positive and
# negative segments start at arbitrary offsets anyway, and each new value would cost a JIT.
@triton.jit(do_not_specialize=["L", "NBP", "NP"])
def _pass_a_kernel(key_ptr, plab_ptr, coef_ptr, part_ptr, npos_ptr, nkeep_ptr,
                   bsel_ptr, fb_ptr, fbd_ptr, L, NBP, NP, delta, half_inv,
                   BP: tl.constexpr, BL: tl.constexpr, BL2: tl.constexpr,
                   DELTA_ZERO: tl.constexpr, EXACT: tl.constexpr, NEED_GRAD: tl.constexpr,
                   BUCKETS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    plane = L.to(tl.int64)     # every k·L offset in int64 (6·M·L may pass 2^31)
    base = row * plane
    acc_ty = key_ptr.dtype.element_ty
    n = tl.load(npos_ptr + row)
    n_keep = tl.load(nkeep_ptr + row)
    NC: tl.constexpr = 6 if EXACT else 3
    cbase = row * NC * plane
    for blk in range(tl.program_id(1), tl.cdiv(n, BP), tl.num_programs(1)):
        i = blk * BP + tl.arange(0, BP)
        i_ok = i < n
        s_i = tl.load(key_ptr + base + i, mask=i_ok, other=0.0)
        y_i = tl.load(plab_ptr + base + i, mask=i_ok, other=0.0)

        # Negatives: F_i (and Σ[|x| < δ] for F'_i). Full tiles unmasked, then the ragged one.
        fp2 = tl.zeros([BP, BL], acc_ty)
        fp_ramp2 = tl.zeros([BP, BL], acc_ty)
        n_full = n_keep // BL
        for t in range(0, n_full):
            j = n + t * BL + tl.arange(0, BL)
            x = tl.load(key_ptr + base + j)[None, :] - s_i[:, None]
            fp2 += _step(x, half_inv, DELTA_ZERO)
            if EXACT:
                fp_ramp2 += _in_ramp(x, delta)
        if n_full * BL < n_keep:
            j = n + n_full * BL + tl.arange(0, BL)
            j_ok = (j < n + n_keep)[None, :]
            x = tl.load(key_ptr + base + j, mask=j < n + n_keep, other=0.0)[None, :] - s_i[:, None]
            fp2 += tl.where(j_ok, _step(x, half_inv, DELTA_ZERO), 0.0)
            if EXACT:
                fp_ramp2 += tl.where(j_ok, _in_ramp(x, delta), 0.0)
        fp_count = tl.sum(fp2, 1)
        fp_ramp = tl.sum(fp_ramp2, 1)
        if BUCKETS:
            # A bucketed row (nkeep = 0 above): F_i and F'_i's band count come from
            # triton_bucketed's histogram instead.
            bucketed = (i * 0 + tl.load(bsel_ptr + row)) >= 0     # per lane, for the mask
            b_ok = i_ok & bucketed
            fp_count = tl.where(bucketed, tl.load(fb_ptr + row * NP + i, mask=b_ok, other=0.0),
                                fp_count)
            if EXACT:
                fp_ramp = tl.where(bucketed,
                                   tl.load(fbd_ptr + row * NP + i, mask=b_ok, other=0.0),
                                   fp_ramp)

        # Positives (j = i included): T, Z, C, D and their H' sums, in [BP, BL2] registers
        # reduced once at the end (a reduction per tile would cost more shuffles than math).
        t2 = tl.zeros([BP, BL2], acc_ty)
        z2 = tl.zeros([BP, BL2], acc_ty)
        c2 = tl.zeros([BP, BL2], acc_ty)
        d2 = tl.zeros([BP, BL2], acc_ty)
        a_ramp2 = tl.zeros([BP, BL2], acc_ty)
        c_ramp2 = tl.zeros([BP, BL2], acc_ty)
        t_ramp2 = tl.zeros([BP, BL2], acc_ty)
        d_ramp2 = tl.zeros([BP, BL2], acc_ty)
        for j0 in range(0, n, BL2):
            j = j0 + tl.arange(0, BL2)
            j_ok = j < n
            s_j = tl.load(key_ptr + base + j, mask=j_ok, other=0.0)
            y_j = tl.load(plab_ptr + base + j, mask=j_ok, other=0.0)
            x = s_j[None, :] - s_i[:, None]
            gap = (1.0 - y_j)[None, :]                       # 1 − y_j
            upper = y_j[None, :] >= y_i[:, None]             # j ∈ T_i
            h = tl.where(j_ok[None, :], _step(x, half_inv, DELTA_ZERO), 0.0)
            hg = h * gap
            t2 += tl.where(upper, h, 0.0)
            z2 += tl.where(upper, 0.0, h)
            c2 += hg
            d2 += tl.where(upper, hg, 0.0)
            if EXACT:
                w = tl.where(j_ok[None, :], _in_ramp(x, delta), 0.0)
                wg = w * gap
                a_ramp2 += w
                c_ramp2 += wg
                t_ramp2 += tl.where(upper, w, 0.0)
                d_ramp2 += tl.where(upper, wg, 0.0)
        t_mass = tl.sum(t2, 1)
        z_mass = tl.sum(z2, 1)
        c_sum = tl.sum(c2, 1)
        d_sum = tl.sum(d2, 1)
        # Lanes past n would divide 0 by 0; they are never stored, but keep them quiet.
        t_mass = tl.where(i_ok, t_mass, 1.0)
        a_mass = t_mass + z_mass

        rank_error = _div(fp_count, a_mass + fp_count)
        sort_error = _div(c_sum, a_mass) - _div(d_sum, t_mass)
        tl.store(part_ptr + row * 2 * NBP + blk, tl.sum(tl.where(i_ok, rank_error, 0.0), 0))
        tl.store(part_ptr + (row * 2 + 1) * NBP + blk, tl.sum(tl.where(i_ok, sort_error, 0.0), 0))
        if NEED_GRAD:
            if EXACT:
                denom = a_mass + fp_count
                d_f = _div(a_mass, denom * denom)
                d_a = _div(-fp_count, denom * denom) - _div(c_sum, a_mass * a_mass)
                d_c = _div(tl.full(a_mass.shape, 1.0, a_mass.dtype), a_mass)
                d_t = _div(d_sum, t_mass * t_mass)
                d_d = _div(tl.full(t_mass.shape, -1.0, t_mass.dtype), t_mass)
                self_term = -(d_f * fp_ramp + d_a * tl.sum(a_ramp2, 1)
                              + d_c * tl.sum(c_ramp2, 1) + d_t * tl.sum(t_ramp2, 1)
                              + d_d * tl.sum(d_ramp2, 1)) * half_inv
                tl.store(coef_ptr + cbase + i, d_f, mask=i_ok)
                tl.store(coef_ptr + cbase + plane + i, d_a, mask=i_ok)
                tl.store(coef_ptr + cbase + 2 * plane + i, d_c, mask=i_ok)
                tl.store(coef_ptr + cbase + 3 * plane + i, d_t, mask=i_ok)
                tl.store(coef_ptr + cbase + 4 * plane + i, d_d, mask=i_ok)
                tl.store(coef_ptr + cbase + 5 * plane + i, self_term, mask=i_ok)
            else:
                has_fp = fp_count > _EPS
                has_lower = z_mass > _EPS
                # (the inner where only keeps the discarded 0/0 lanes quiet)
                rank_coef = tl.where(has_fp, _div(rank_error, tl.where(has_fp, fp_count, 1.0)), 0.0)
                sort_coef = tl.where(has_lower, _div(sort_error, tl.where(has_lower, z_mass, 1.0)),
                                     0.0)
                self_term = -(tl.where(has_fp, rank_error, 0.0)
                              + tl.where(has_lower, sort_error, 0.0))
                tl.store(coef_ptr + cbase + i, rank_coef, mask=i_ok)
                tl.store(coef_ptr + cbase + plane + i, sort_coef, mask=i_ok)
                tl.store(coef_ptr + cbase + 2 * plane + i, self_term, mask=i_ok)


@triton.jit(do_not_specialize=["L", "NBP", "NBN"])
def _pass_b_kernel(key_ptr, plab_ptr, idx_ptr, coef_ptr, part_ptr, npos_ptr, nkeep_ptr,
                   grad_ptr, rank_ptr, sort_ptr,
                   L, NBP, NBN, delta, half_inv,
                   BPA: tl.constexpr, FB: tl.constexpr,
                   BN: tl.constexpr, BNI: tl.constexpr, BJ: tl.constexpr, BJI: tl.constexpr,
                   DELTA_ZERO: tl.constexpr, EXACT: tl.constexpr, NEED_GRAD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    plane = L.to(tl.int64)
    base = row * plane
    acc_ty = key_ptr.dtype.element_ty
    n = tl.load(npos_ptr + row)
    n_keep = tl.load(nkeep_ptr + row)
    inv_n = _div(tl.full([], 1.0, acc_ty), tl.maximum(n, 1).to(acc_ty))

    if p == 0:
        # rank_row, sort_row: pass A's block partials summed in block order.
        nb = tl.cdiv(n, BPA)
        rank_acc = tl.zeros([FB], acc_ty)
        sort_acc = tl.zeros([FB], acc_ty)
        for b0 in range(0, nb, FB):
            b = b0 + tl.arange(0, FB)
            rank_acc += tl.load(part_ptr + row * 2 * NBP + b, mask=b < nb, other=0.0)
            sort_acc += tl.load(part_ptr + (row * 2 + 1) * NBP + b, mask=b < nb, other=0.0)
        tl.store(rank_ptr + row, tl.sum(rank_acc, 0) * inv_n)
        tl.store(sort_ptr + row, tl.sum(sort_acc, 0) * inv_n)

    if NEED_GRAD:
        NC: tl.constexpr = 6 if EXACT else 3
        cbase = row * NC * plane
        g_ty = grad_ptr.dtype.element_ty
        if p < NBN:
            # Unpruned negatives k: Σ_i H(x_ik)·r_i, or Σ_i H'(x_ik)·∂F_i.
            for blk in range(p, tl.cdiv(n_keep, BN), NBN):
                k = blk * BN + tl.arange(0, BN)
                k_ok = k < n_keep
                s_k = tl.load(key_ptr + base + n + k, mask=k_ok, other=0.0)
                acc = tl.zeros([BN, BNI], acc_ty)
                for i0 in range(0, n, BNI):
                    i = i0 + tl.arange(0, BNI)
                    i_ok = i < n
                    s_i = tl.load(key_ptr + base + i, mask=i_ok, other=0.0)
                    c_i = tl.load(coef_ptr + cbase + i, mask=i_ok, other=0.0)
                    x = s_k[:, None] - s_i[None, :]
                    if EXACT:
                        acc += _in_ramp(x, delta) * c_i[None, :]
                    else:
                        acc += _step(x, half_inv, DELTA_ZERO) * c_i[None, :]
                g = tl.sum(acc, 1) * inv_n
                if EXACT:
                    g = g * half_inv
                dst = tl.load(idx_ptr + base + n + k, mask=k_ok, other=0)
                tl.store(grad_ptr + base + dst, g.to(g_ty), mask=k_ok)
        else:
            # Positives j: self_j + the P×P sweep.
            for blk in range(p - NBN, tl.cdiv(n, BJ), tl.num_programs(1) - NBN):
                j = blk * BJ + tl.arange(0, BJ)
                j_ok = j < n
                s_j = tl.load(key_ptr + base + j, mask=j_ok, other=0.0)
                y_j = tl.load(plab_ptr + base + j, mask=j_ok, other=0.0)
                gap_j = (1.0 - y_j)[:, None]
                acc = tl.zeros([BJ, BJI], acc_ty)
                for i0 in range(0, n, BJI):
                    i = i0 + tl.arange(0, BJI)
                    i_ok = i < n
                    s_i = tl.load(key_ptr + base + i, mask=i_ok, other=0.0)
                    y_i = tl.load(plab_ptr + base + i, mask=i_ok, other=0.0)
                    x = s_j[:, None] - s_i[None, :]
                    if EXACT:
                        d_a = tl.load(coef_ptr + cbase + plane + i, mask=i_ok, other=0.0)
                        d_c = tl.load(coef_ptr + cbase + 2 * plane + i, mask=i_ok, other=0.0)
                        d_t = tl.load(coef_ptr + cbase + 3 * plane + i, mask=i_ok, other=0.0)
                        d_d = tl.load(coef_ptr + cbase + 4 * plane + i, mask=i_ok, other=0.0)
                        upper = y_j[:, None] >= y_i[None, :]     # j ∈ T_i
                        c = (d_a[None, :] + d_c[None, :] * gap_j
                             + tl.where(upper, d_t[None, :] + d_d[None, :] * gap_j, 0.0))
                        acc += _in_ramp(x, delta) * c
                    else:
                        q_i = tl.load(coef_ptr + cbase + plane + i, mask=i_ok, other=0.0)[None, :]
                        lower = y_j[:, None] < y_i[None, :]      # y_j < y_i
                        acc += tl.where(lower, _step(x, half_inv, DELTA_ZERO) * q_i, 0.0)
                swept = tl.sum(acc, 1)
                if EXACT:
                    swept = swept * half_inv
                self_j = tl.load(coef_ptr + cbase + (NC - 1) * plane + j, mask=j_ok, other=0.0)
                dst = tl.load(idx_ptr + base + j, mask=j_ok, other=0)
                tl.store(grad_ptr + base + dst, ((self_j + swept) * inv_n).to(g_ty), mask=j_ok)


# Whether TRITON_INTERPRET was on when these were decorated: what really runs, whatever the
# environment says now.
_INTERPRETED = not isinstance(_compact_kernel, triton.runtime.JITFunction)


# ----------------------------------------------------------------------------- launcher


@dataclass(frozen=True)
class Blocks:
    """Tile sizes (powers of two) and programs per row; ``programs=None``: from the SM count."""
    compact: int = 1024     # elements per compaction tile
    compact_warps: int = 4
    a_pos: int = 64         # pass A: positives per block (one program's rows of pairs)
    a_neg: int = 32         # pass A: negatives per tile
    a_pp: int = 16          # pass A: positives per tile of the P×P sweep
    b_neg: int = 128        # pass B: negatives per block
    b_neg_pos: int = 32     # pass B: positives per tile against a negative block
    b_pos: int = 32         # pass B: positives per block
    b_pos_pos: int = 32     # pass B: positives per tile against a positive block
    warps: int = 4
    programs: int | None = None
    bucket_chunk: int = 1024    # bucketed rows: negatives per search / gradient chunk
    bucket_tile: int = 1024     # bucketed rows: tile of the per-row scans


def default_blocks(length: int, acc_dtype: torch.dtype = torch.float32) -> Blocks:
    """Tiles for a row length (and accumulation dtype): a shape always gets the same arithmetic.

    Chosen from the sm_90 machine code of triton 3.6 and 3.9 (no GPU timing yet): pass A's
    64×32 tile is 16 pairs per thread at 5 instructions each (sub, fma, two NaN-propagating
    min/max, add) in 72 registers (128 in exact mode), 7 (4) programs per SM; a 64×64 tile
    needs 251 registers under triton 3.6. Pass B's 128×32 tile: 5 instructions a pair, 80
    registers. Long rows get a wide compaction tile: one program per row streams it twice.
    """
    if length <= 1024:      # SimCC vectors (384, 512 bins): ~37 positives, short rows
        return Blocks(compact=max(16, min(1024, triton.next_power_of_2(length))),
                      a_pos=16, a_neg=64, b_neg=64, b_neg_pos=16, b_pos=16, b_pos_pos=16)
    compact, compact_warps = (2048, 8) if length > 8192 else (1024, 4)
    if acc_dtype == torch.float64:
        # Half the pass-B negative tile (128 × 16): 128 × 32 float64 accumulators took 236–240
        # registers on sm_80 (one program per SM), 64 × 32 spilled; this one: ≤ 126, no spill.
        return Blocks(compact=compact, compact_warps=compact_warps, a_pos=32, b_neg_pos=16,
                      b_pos_pos=16)
    return Blocks(compact=compact, compact_warps=compact_warps)




def _multiprocessors(device: torch.device) -> int:
    """SMs of the tensors' device (1 on CPU); tests/gpu_resources.py sets it per target."""
    if device.type != "cuda":
        return 1
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def _programs_per_row(m: int, blocks_per_row: int, sms: int, override) -> int:
    """Programs per row for a strided loop over a row's blocks: ~32 per SM in all."""
    if override is not None:
        return max(1, min(blocks_per_row, override))
    return max(1, min(blocks_per_row, triton.cdiv(32 * sms, max(m, 1)), 16384))


_ALGORITHM_CODE = {"pairwise": 0, "bucketed": 1, "auto": 2}   # csrc's Algorithm enum


def _choice_args(algorithm: str, length: int, acc: torch.dtype):
    """The compaction's choice arguments: (algorithm code, capacity, cost constants)."""
    cost = cost_model.COSTS["triton"]
    return (_ALGORITHM_CODE[algorithm], tb.max_positives(length), float(cost.per_negative),
            float(cost.per_positive), float(cost.positive_pairs),
            float(cost.bucketed_positive_pairs))


def _takes_buckets(algorithm: str, acc: torch.dtype) -> bool:
    # float64 rows stay pairwise here (triton_bucketed.py: they do not pack into a sort key).
    if algorithm not in _ALGORITHM_CODE:
        raise ValueError(f"algorithm: expected one of {list(_ALGORITHM_CODE)}, got {algorithm!r}")
    return algorithm != "pairwise" and tb.supports(acc)


def rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad, algorithm="pairwise", *,
                   blocks: Blocks | None = None):
    """The backend contract of rspose_kernels.backends; ``blocks`` overrides the tiles (tests).

    ``algorithm`` "bucketed" / "auto": rows chosen on the device take triton_bucketed's
    positive-negative terms; "pairwise" launches exactly the three pairwise kernels."""
    delta = kernel_scalar(delta)
    if exact and not delta > 0:
        raise ValueError(f"delta: the exact gradient needs delta > 0, got {delta}")
    scores = scores.contiguous()
    labels = labels.contiguous()
    m, length = scores.shape
    acc = labels.dtype
    dev = scores.device
    if m == 0 or length == 0:
        return (torch.zeros(m, dtype=acc, device=dev), torch.zeros(m, dtype=acc, device=dev),
                torch.zeros(m, dtype=torch.int32, device=dev),
                torch.zeros((m, length) if need_grad else (0,), dtype=acc, device=dev))
    # Every element of these is written by exactly one program.
    rank = torch.empty(m, dtype=acc, device=dev)
    sort = torch.empty(m, dtype=acc, device=dev)
    npos = torch.empty(m, dtype=torch.int32, device=dev)
    grad = torch.empty((m, length) if need_grad else (0,), dtype=acc, device=dev)

    cfg = blocks or default_blocks(length, acc)
    exact = bool(exact and need_grad)          # the forward is the same in both modes
    delta_zero = delta == 0.0
    half_inv = 0.5 / delta if delta > 0 else 0.0
    n_coef = 6 if exact else 3
    nbp = triton.cdiv(length, cfg.a_pos)

    key = torch.empty((m, length), dtype=acc, device=dev)
    plab = torch.empty((m, length), dtype=acc, device=dev)
    idx = torch.empty((m, length), dtype=torch.int32, device=dev)
    nkeep = torch.empty(m, dtype=torch.int32, device=dev)
    part = torch.empty((m, 2, nbp), dtype=acc, device=dev)
    coef = torch.empty((m, n_coef, length) if need_grad else (1,), dtype=acc, device=dev)
    grad_arg = grad if need_grad else part     # never written when need_grad is False

    buckets = _takes_buckets(algorithm, acc)
    ws = tb.workspace(m, length, exact, need_grad, dev) if buckets else None
    choice = _choice_args(algorithm, length, acc) if buckets else (0, 0, 0.0, 0.0, 0.0, 0.0)
    bucket_kw = dict(chunk=cfg.bucket_chunk, tile=cfg.bucket_tile, programs=cfg.programs)

    nw = cfg.warps
    sms = _multiprocessors(dev)
    with _on_device(dev):
        _compact_kernel[(m,)](
            scores, labels, key, idx, plab, grad_arg, npos, nkeep,
            ws.bsel if buckets else npos, length, float(pos_thr), delta, *choice,
            BLOCK=cfg.compact, WRITE_GRAD=need_grad, CHOOSE=buckets,
            num_warps=cfg.compact_warps)
        if buckets:
            tb.launch_histogram(ws, key, npos, m, length, delta, exact, sms=sms, **bucket_kw)
        ga = _programs_per_row(m, nbp, sms, cfg.programs)
        _pass_a_kernel[(m, ga)](
            key, plab, coef, part, npos, nkeep, ws.bsel if buckets else npos,
            ws.fb if buckets else key, ws.fbd if buckets else key, length, nbp,
            ws.np_ if buckets else 0, delta, half_inv,
            BP=cfg.a_pos, BL=cfg.a_neg, BL2=cfg.a_pp,
            DELTA_ZERO=delta_zero, EXACT=exact, NEED_GRAD=need_grad, BUCKETS=buckets,
            num_warps=nw)
        if need_grad:
            nbn = _programs_per_row(m, triton.cdiv(length, cfg.b_neg), sms, cfg.programs)
            nbj = _programs_per_row(m, triton.cdiv(length, cfg.b_pos), sms, cfg.programs)
        else:
            nbn, nbj = 1, 0
        _pass_b_kernel[(m, nbn + nbj)](
            key, plab, idx, coef, part, npos, nkeep, grad_arg, rank, sort,
            length, nbp, nbn, delta, half_inv,
            BPA=cfg.a_pos, FB=64, BN=cfg.b_neg, BNI=cfg.b_neg_pos, BJ=cfg.b_pos, BJI=cfg.b_pos_pos,
            DELTA_ZERO=delta_zero, EXACT=exact, NEED_GRAD=need_grad, num_warps=nw)
        if buckets and need_grad:
            tb.launch_gradient(ws, key, idx, npos, coef, grad, m, length, delta, exact, sms=sms,
                               **bucket_kw)
    return rank, sort, npos, grad


def kernel_scalar(x: float) -> float:
    """``x`` as the kernels see it: Triton passes a Python float as float32. The host's own
    branches (δ = 0, exact mode's δ > 0) must decide on that value, or a δ below float32's
    range (1e-46) would be 0 on the device and not on the host; under the interpreter
    (float64 scalars) it also makes the kernels compute with the GPU's δ."""
    return ctypes.c_float(float(x)).value   # round to float32 (no tensor per call)


def bucketed_rows(scores, labels, delta, pos_thr, algorithm="auto", *,
                  blocks: Blocks | None = None):
    """Bool [M]: the rows ``rank_sort_rows(..., algorithm=algorithm)`` computes bucketed, as
    its compaction chooses them on the device (tests and the benchmark's reports)."""
    delta = kernel_scalar(delta)
    scores = scores.contiguous()
    labels = labels.contiguous()
    m, length = scores.shape
    acc = labels.dtype
    if m == 0 or length == 0 or not _takes_buckets(algorithm, acc):
        return torch.zeros(m, dtype=torch.bool, device=scores.device)
    cfg = blocks or default_blocks(length, acc)
    key = torch.empty((m, length), dtype=acc, device=scores.device)
    plab = torch.empty_like(key)
    idx = torch.empty((m, length), dtype=torch.int32, device=scores.device)
    npos = torch.empty(m, dtype=torch.int32, device=scores.device)
    nkeep = torch.empty_like(npos)
    bsel = torch.empty_like(npos)
    with _on_device(scores.device):
        _compact_kernel[(m,)](
            scores, labels, key, idx, plab, key, npos, nkeep, bsel, length, float(pos_thr),
            float(delta), *_choice_args(algorithm, length, acc), BLOCK=cfg.compact,
            WRITE_GRAD=False, CHOOSE=True, num_warps=cfg.compact_warps)
    return bsel >= 0


def row_stats(scores, labels, delta, pos_thr, *, blocks: Blocks | None = None):
    """``(npos, nkeep)`` per row: the positives, and the negatives that survive pruning.

    The kernels evaluate ``n·(n + nkeep)`` pairs per row in pass A and as many in pass B
    (bench/run.py's pair count; tests check pruning with it).
    """
    scores = scores.contiguous()
    labels = labels.contiguous()
    m, length = scores.shape
    acc = labels.dtype
    npos = torch.zeros(m, dtype=torch.int32, device=scores.device)
    nkeep = torch.zeros(m, dtype=torch.int32, device=scores.device)
    if m == 0 or length == 0:
        return npos, nkeep
    cfg = blocks or default_blocks(length, acc)
    key = torch.empty((m, length), dtype=acc, device=scores.device)
    plab = torch.empty_like(key)
    idx = torch.empty((m, length), dtype=torch.int32, device=scores.device)
    with _on_device(scores.device):
        _compact_kernel[(m,)](
            scores, labels, key, idx, plab, key, npos, nkeep, npos, length, float(pos_thr),
            float(delta), 0, 0, 0.0, 0.0, 0.0, 0.0, BLOCK=cfg.compact, WRITE_GRAD=False,
            CHOOSE=False, num_warps=cfg.compact_warps)
    return npos, nkeep


def _on_device(dev: torch.device):
    # Triton launches on the current CUDA device; make it the tensors' one.
    if dev.type == "cuda":
        return torch.cuda.device(dev)
    return contextlib.nullcontext()
