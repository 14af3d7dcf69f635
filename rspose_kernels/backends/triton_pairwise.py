"""The pairwise kernels of the `triton` backend (docs/DESIGN.md §2, §5); triton_backend.py
launches them, and its docstring walks through one call.

Every sum, coefficient and threshold is the one of docs/MATH.md. Each row is compacted once
(positives first, then the negatives that survive pruning), then pass A sweeps positive blocks
against all kept elements and pass B writes each element's gradient. The per-row choice of the
bucketed algorithm is made in ``_compact_kernel`` by the rule of cost_model (same constants).
"""
from __future__ import annotations

import triton
import triton.language as tl

from . import EPS, cost_model

_EPS = tl.constexpr(EPS)    # the ε of docs/DESIGN.md §2, as the kernels see it
_RESOLVE = tl.constexpr(cost_model.RESOLVE)   # δ must be ≥ this · max|s| for a bucketed row


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
        # The row's algorithm (docs/DESIGN.md §5b), chosen here from its counts (no host
        # sync) by cost_model's rule with this backend's constants (the C++ kernels'
        # takes_bucketed): bucketed when forced (algorithm 1) or preferred by the cost model
        # (2), provided its live scores are finite, δ resolves at their scale
        # (δ ≥ RESOLVE·max|s|) and its positives fit the sort (n ≤ max_pos). float32 rows only,
        # so no score reaches SPAN_LIMIT. A bucketed row gets bsel = its kept negatives and
        # nkeep = 0 (pass A / pass B then sweep its positives only); others bsel = −1.
        bad = nonfinite > 0
        resolves = (delta == 0.0) | (_f64(delta) >= span.to(tl.float64) * _RESOLVE)
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


@triton.jit
def _a_shift(n, n_keep, BP: tl.constexpr, BL: tl.constexpr, BL2: tl.constexpr):
    """The row's pass-A tile, chosen on the device from its counts: blocks of BP >> k
    positives against tiles of BL << k negatives (the same [BP, BL] registers), k = 1 where
    its padded tiles hold fewer lanes (and BP / 2 ≥ 2), else 0. A row of 21 positives in
    blocks of 64 left two thirds of the lanes idle (bench/work_model.py --lanes). A third
    size (k = 2) made ptxas spill pass A on sm_80. ``triton_backend.pass_a_tile`` is the
    same rule on the host (the partials' count, the work model)."""
    k = n * 0
    if BP >= 4:
        half = _a_lanes(n, n_keep, BP // 2, BL * 2, BL2) < _a_lanes(n, n_keep, BP, BL, BL2)
        k = tl.where(half, 1, k)
    return k


@triton.jit
def _a_lanes(n, n_keep, BP: tl.constexpr, BL: tl.constexpr, BL2: tl.constexpr):
    """Lanes of a row's pass-A tiles: its padded positives × (padded negatives + positives)."""
    n64 = n.to(tl.int64)
    pos = tl.cdiv(n64, BP) * BP
    return pos * (tl.cdiv(n_keep.to(tl.int64), BL) * BL + tl.cdiv(n64, BL2) * BL2)


# L and the block counts are not specialised (divisibility, == 1): the row's positive and
# negative segments start at arbitrary offsets anyway, and each new value would cost a JIT.
@triton.jit(do_not_specialize=["L", "NBP", "NP"])
def _pass_a_kernel(key_ptr, plab_ptr, coef_ptr, part_ptr, npos_ptr, nkeep_ptr,
                   bsel_ptr, fb_ptr, fbd_ptr, L, NBP, NP, delta, half_inv,
                   BP: tl.constexpr, BL: tl.constexpr, BL2: tl.constexpr,
                   DELTA_ZERO: tl.constexpr, EXACT: tl.constexpr, NEED_GRAD: tl.constexpr,
                   BUCKETS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    n = tl.load(npos_ptr + row)
    n_keep = tl.load(nkeep_ptr + row)
    k = _a_shift(n, n_keep, BP, BL, BL2)
    # Each tile a compiled branch (the constexpr guard keeps blocks of fewer than 2 out).
    if k == 0:
        _pass_a_blocks(key_ptr, plab_ptr, coef_ptr, part_ptr, bsel_ptr, fb_ptr, fbd_ptr, row, n,
                       n_keep, L, NBP, NP, delta, half_inv, BP, BL, BL2, DELTA_ZERO, EXACT,
                       NEED_GRAD, BUCKETS)
    if BP >= 4:
        if k == 1:
            _pass_a_blocks(key_ptr, plab_ptr, coef_ptr, part_ptr, bsel_ptr, fb_ptr, fbd_ptr, row,
                           n, n_keep, L, NBP, NP, delta, half_inv, BP // 2, BL * 2, BL2,
                           DELTA_ZERO, EXACT, NEED_GRAD, BUCKETS)


@triton.jit
def _pass_a_blocks(key_ptr, plab_ptr, coef_ptr, part_ptr, bsel_ptr, fb_ptr, fbd_ptr, row, n,
                   n_keep, L, NBP, NP, delta, half_inv,
                   BP: tl.constexpr, BL: tl.constexpr, BL2: tl.constexpr,
                   DELTA_ZERO: tl.constexpr, EXACT: tl.constexpr, NEED_GRAD: tl.constexpr,
                   BUCKETS: tl.constexpr):
    """Pass A over the row's blocks of BP positives g, g + G, ... (program (row, g))."""
    plane = L.to(tl.int64)     # every k·L offset in int64 (6·M·L may pass 2^31)
    base = row * plane
    acc_ty = key_ptr.dtype.element_ty
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
                   BPA: tl.constexpr, BLA: tl.constexpr, BL2A: tl.constexpr, FB: tl.constexpr,
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
        # rank_row, sort_row: pass A's block partials summed in block order (as many as
        # the row's pass-A tile made, _a_shift).
        nb = tl.cdiv(n, BPA >> _a_shift(n, n_keep, BPA, BLA, BL2A))
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
