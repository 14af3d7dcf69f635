"""The `torch` backend: the Rank & Sort core in plain, vectorised PyTorch.

It is the reference every other backend is tested against, so it is written to be read:
the sums and coefficients of docs/MATH.md, one line each, over blocks of (rows × positives ×
whole row). No pruning, no cleverness.

Memory: the pair temporaries of one block hold at most ``PAIR_BUDGET`` pairs (rows ×
positives × L, or one positive × L when a single row is longer); about ten such temporaries
are alive at once, so the extra memory is bounded by ~10 · PAIR_BUDGET · 4 bytes (≈ 160 MiB
in float32, twice that in float64) plus O(M·L) for the inputs and the gradient, whatever the
shape. The positive counts are read on the host to size the blocks: a reference may sync;
the kernel backends do not.
"""
from __future__ import annotations

import torch

from . import EPS, accumulation_dtype

PAIR_BUDGET = 1 << 22


def step(x: torch.Tensor, delta: float) -> torch.Tensor:
    """H(x): the smoothed step; for δ = 0 the hard step, NaN staying NaN."""
    if delta > 0:
        return (x / (2 * delta) + 0.5).clamp(0, 1)
    return torch.where(x >= 0, 1.0, torch.where(x < 0, 0.0, x)).to(x.dtype)


def step_(x: torch.Tensor, delta: float) -> torch.Tensor:
    """H(x) computed in place (x is a temporary)."""
    if delta > 0:
        return x.div_(2 * delta).add_(0.5).clamp_(0, 1)
    return step(x, delta)


def step_slope(x: torch.Tensor, delta: float) -> torch.Tensor:
    """H'(x) = 1/(2δ) inside the ramp, 0 outside."""
    return (x.abs() < delta).to(x.dtype) / (2 * delta)


def rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad):
    acc = accumulation_dtype(scores.dtype)
    s = scores.to(acc)
    y = labels.to(acc)
    m, length = s.shape
    pos = y > pos_thr
    npos = pos.sum(1)
    rank = s.new_zeros(m)
    sort = s.new_zeros(m)
    grad = s.new_zeros(m, length) if need_grad else None

    counts = npos.tolist()
    pmax = max(counts, default=0)
    if pmax > 0:
        # Positives first, in index order: slot p of row r holds its p-th positive.
        order = torch.argsort((~pos).to(torch.int8), dim=1, stable=True)
        neg_f = (~pos).to(acc)
        block_p = min(pmax, max(1, PAIR_BUDGET // length))
        block_r = max(1, PAIR_BUDGET // (block_p * length))
        for r0 in range(0, m, block_r):
            rows = slice(r0, min(m, r0 + block_r))
            n_slots = max(counts[r0:r0 + block_r])
            if n_slots == 0:
                continue
            slots = order[rows, :n_slots]                         # [R, Pc]
            slot_ok = torch.arange(n_slots, device=s.device) < npos[rows, None]
            # Slots past a row's count hold 0, not the score of the negative they point at, so
            # a NaN negative reaches only the sums that include it (F), as in the definition.
            pos_s = torch.where(slot_ok, s[rows].gather(1, slots), 0)
            pos_y = torch.where(slot_ok, y[rows].gather(1, slots), 0)
            grad_pos = s.new_zeros(pos_s.shape)                   # pass B on positives, by slot
            for p0 in range(0, n_slots, block_p):
                blk = slice(p0, p0 + block_p)
                out = _block(s[rows], y[rows], neg_f[rows], pos_s, pos_y, slot_ok, blk,
                             delta, exact, need_grad)
                rank[rows] += out[0]
                sort[rows] += out[1]
                if need_grad:
                    grad[rows] += out[2]
                    grad_pos += out[3]
            if need_grad:
                # Slots past a row's count point at distinct negatives and carry exact zeros.
                grad[rows] = grad[rows].scatter_add(1, slots, grad_pos)
        n = npos.clamp(min=1).to(acc)
        rank /= n
        sort /= n
        if need_grad:
            grad /= n[:, None]
    grad = grad if need_grad else s.new_empty(0)
    return rank, sort, npos.to(torch.int32), grad


def _block(s, y, neg_f, pos_s, pos_y, slot_ok, blk, delta, exact, need_grad):
    """Positives i in slots ``blk`` against the negatives (P×L) and the positives (P×P).

    Returns the block's Σ ℓR_i and Σ eS_i per row and, when a gradient is needed, the
    pass-B sweep onto the row's negatives [R, L] and onto its positives by slot [R, Pc]
    (self terms included).
    """
    zero = s.new_zeros(())
    i_ok = slot_ok[:, blk]
    s_i = pos_s[:, blk, None]
    y_i = pos_y[:, blk, None]
    # Against every element, only the negatives are used (weight neg_f).
    x_neg = s[:, None, :] - s_i                                  # x_ij, [R, Pb, L]
    hp_neg = step_slope(x_neg, delta) if exact and need_grad else None
    h_neg = step_(x_neg, delta)                                  # in place: the largest temporary
    # Against the row's positives (slots; invalid slots masked out).
    x_pos = pos_s[:, None, :] - s_i                              # [R, Pb, Pc]
    h_pos = step(x_pos, delta) * slot_ok[:, None, :]
    upper = pos_y[:, None, :] >= y_i                             # j ∈ T_i
    quality_gap = (1 - pos_y)[:, None, :]                        # 1 − y_j
    h_upper = h_pos * upper
    h_lower = h_pos - h_upper                                    # y_j < y_i

    fp_count = torch.einsum("rpl,rl->rp", h_neg, neg_f)          # F_i
    t_mass = h_upper.sum(-1)                                     # T_i
    z_mass = h_lower.sum(-1)                                     # Z_i
    c_sum = (h_pos * quality_gap).sum(-1)                        # C_i
    d_sum = (h_upper * quality_gap).sum(-1)                      # D_i
    a_mass = t_mass + z_mass                                     # A_i

    rank_error = torch.where(i_ok, fp_count / (a_mass + fp_count), zero)
    sort_error = torch.where(i_ok, c_sum / a_mass - d_sum / t_mass, zero)
    if not need_grad:
        return rank_error.sum(1), sort_error.sum(1)
    onto_slots = torch.zeros_like(pos_s)
    if not exact:
        has_fp = i_ok & (fp_count > EPS)
        has_lower = i_ok & (z_mass > EPS)
        rank_coef = torch.where(has_fp, rank_error / fp_count, zero)      # r_i
        sort_coef = torch.where(has_lower, sort_error / z_mass, zero)     # q_i
        onto_slots[:, blk] = -(torch.where(has_fp, rank_error, zero)
                               + torch.where(has_lower, sort_error, zero))
        onto_neg = neg_f * torch.einsum("rpl,rp->rl", h_neg, rank_coef)
        onto_slots += torch.einsum("rpj,rp->rj", h_lower, sort_coef)
        return rank_error.sum(1), sort_error.sum(1), onto_neg, onto_slots

    hp_pos = step_slope(x_pos, delta) * slot_ok[:, None, :]
    hp_upper = hp_pos * upper
    denom = a_mass + fp_count
    d_f = a_mass / denom ** 2
    d_a = -fp_count / denom ** 2 - c_sum / a_mass ** 2
    d_c = 1 / a_mass
    d_t = d_sum / t_mass ** 2
    d_d = -1 / t_mass
    d_f, d_a, d_c, d_t, d_d = (torch.where(i_ok, v, zero) for v in (d_f, d_a, d_c, d_t, d_d))
    onto_slots[:, blk] = -(d_f * torch.einsum("rpl,rl->rp", hp_neg, neg_f)
                           + d_a * hp_pos.sum(-1)
                           + d_c * (hp_pos * quality_gap).sum(-1)
                           + d_t * hp_upper.sum(-1)
                           + d_d * (hp_upper * quality_gap).sum(-1))
    onto_neg = neg_f * torch.einsum("rpl,rp->rl", hp_neg, d_f)
    gap_j = 1 - pos_y
    onto_slots += (torch.einsum("rpj,rp->rj", hp_pos, d_a)
                   + gap_j * torch.einsum("rpj,rp->rj", hp_pos, d_c)
                   + torch.einsum("rpj,rp->rj", hp_upper, d_t)
                   + gap_j * torch.einsum("rpj,rp->rj", hp_upper, d_d))
    return rank_error.sum(1), sort_error.sum(1), onto_neg, onto_slots
