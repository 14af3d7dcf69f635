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

EPS = 1e-10
PAIR_BUDGET = 1 << 22


def is_available(device_type: str) -> bool:
    return True


def step(x: torch.Tensor, delta: float) -> torch.Tensor:
    """H(x): the smoothed step; for δ = 0 the hard step, NaN staying NaN."""
    if delta > 0:
        return (x / (2 * delta) + 0.5).clamp(0, 1)
    return torch.where(x >= 0, 1.0, torch.where(x < 0, 0.0, x)).to(x.dtype)


def step_slope(x: torch.Tensor, delta: float) -> torch.Tensor:
    """H'(x) = 1/(2δ) inside the ramp, 0 outside."""
    return (x.abs() < delta).to(x.dtype) / (2 * delta)


def rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad):
    acc = torch.float64 if scores.dtype == torch.float64 else torch.float32
    s = scores.to(acc)
    y = labels.to(acc)
    m, l = s.shape
    pos = y > pos_thr
    npos = pos.sum(1)
    rank = s.new_zeros(m)
    sort = s.new_zeros(m)
    grad = s.new_zeros(m, l) if need_grad else None

    counts = npos.tolist()
    pmax = max(counts, default=0)
    if pmax > 0:
        # Positives first, in index order: slot p of row r is its p-th positive.
        order = torch.argsort((~pos).to(torch.int8), dim=1, stable=True)
        pos_f = pos.to(acc)
        neg_f = 1 - pos_f
        quality_gap = (1 - y) * pos_f  # (1 − y_j) over positives, 0 on negatives
        block_p = min(pmax, max(1, PAIR_BUDGET // l))
        block_r = max(1, PAIR_BUDGET // (block_p * l))
        for r0 in range(0, m, block_r):
            r1 = min(m, r0 + block_r)
            rows = slice(r0, r1)
            for p0 in range(0, max(counts[r0:r1]), block_p):
                idx = order[rows, p0:p0 + block_p]
                slot_ok = (torch.arange(p0, p0 + idx.shape[1], device=s.device)
                           < npos[rows, None])
                out = _block(s[rows], y[rows], pos[rows], pos_f[rows], neg_f[rows],
                             quality_gap[rows], idx, slot_ok, delta, exact, need_grad)
                rank[rows] += out[0]
                sort[rows] += out[1]
                if need_grad:
                    grad[rows] += out[2]
                    grad[rows] = grad[rows].scatter_add(1, idx, out[3])
        n = npos.clamp(min=1).to(acc)
        rank /= n
        sort /= n
        if need_grad:
            grad /= n[:, None]
    grad = grad.to(scores.dtype) if need_grad else scores.new_empty(0)
    return rank, sort, npos.to(torch.int32), grad


def _block(s, y, pos, pos_f, neg_f, quality_gap, idx, slot_ok, delta, exact, need_grad):
    """One block of positives i (slots ``idx``) against every element j of their rows.

    Returns the block's Σ ℓR_i and Σ eS_i per row and, when a gradient is needed, the
    element-wise sweep (pass B) and the self terms of the block's positives.
    """
    zero = s.new_zeros(())
    s_i = s.gather(1, idx)[:, :, None]
    y_i = y.gather(1, idx)[:, :, None]
    x = s[:, None, :] - s_i                                   # x_ij = s_j − s_i
    h = step(x, delta)
    upper = pos[:, None, :] & (y[:, None, :] >= y_i)          # j ∈ T_i
    lower = pos[:, None, :] & (y[:, None, :] < y_i)           # j ∈ P, y_j < y_i
    h_upper = h * upper
    h_lower = h * lower

    fp_count = torch.einsum("rpl,rl->rp", h, neg_f)           # F_i
    t_mass = h_upper.sum(-1)                                  # T_i
    z_mass = h_lower.sum(-1)                                  # Z_i
    c_sum = torch.einsum("rpl,rl->rp", h, quality_gap)        # C_i
    d_sum = torch.einsum("rpl,rl->rp", h_upper, quality_gap)  # D_i
    a_mass = t_mass + z_mass                                  # A_i

    rank_error = fp_count / (a_mass + fp_count)
    sort_error = c_sum / a_mass - d_sum / t_mass
    rank_error = torch.where(slot_ok, rank_error, zero)
    sort_error = torch.where(slot_ok, sort_error, zero)
    if not need_grad:
        return rank_error.sum(1), sort_error.sum(1)

    if not exact:
        has_fp = slot_ok & (fp_count > EPS)
        has_lower = slot_ok & (z_mass > EPS)
        rank_coef = torch.where(has_fp, rank_error / fp_count, zero)      # r_i
        sort_coef = torch.where(has_lower, sort_error / z_mass, zero)     # q_i
        self_term = -(torch.where(has_fp, rank_error, zero)
                      + torch.where(has_lower, sort_error, zero))
        sweep = (neg_f * torch.einsum("rpl,rp->rl", h, rank_coef)
                 + torch.einsum("rpl,rp->rl", h_lower, sort_coef))
        return rank_error.sum(1), sort_error.sum(1), sweep, self_term

    hp = step_slope(x, delta)
    hp_upper = hp * upper
    denom = a_mass + fp_count
    d_f = a_mass / denom ** 2
    d_a = -fp_count / denom ** 2 - c_sum / a_mass ** 2
    d_c = 1 / a_mass
    d_t = d_sum / t_mass ** 2
    d_d = -1 / t_mass
    d_f, d_a, d_c, d_t, d_d = (torch.where(slot_ok, v, zero) for v in (d_f, d_a, d_c, d_t, d_d))
    self_term = -(d_f * torch.einsum("rpl,rl->rp", hp, neg_f)
                  + d_a * torch.einsum("rpl,rl->rp", hp, pos_f)
                  + d_c * torch.einsum("rpl,rl->rp", hp, quality_gap)
                  + d_t * hp_upper.sum(-1)
                  + d_d * torch.einsum("rpl,rl->rp", hp_upper, quality_gap))
    self_term = torch.where(slot_ok, self_term, zero)
    sweep = (neg_f * torch.einsum("rpl,rp->rl", hp, d_f)
             + pos_f * (torch.einsum("rpl,rp->rl", hp, d_a)
                        + (1 - y) * torch.einsum("rpl,rp->rl", hp, d_c)
                        + torch.einsum("rpl,rp->rl", hp_upper, d_t)
                        + (1 - y) * torch.einsum("rpl,rp->rl", hp_upper, d_d)))
    return rank_error.sum(1), sort_error.sum(1), sweep, self_term
