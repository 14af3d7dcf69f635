"""The bucketed algorithm in plain, vectorised PyTorch (docs/MATH.md, "The bucketed
algorithm"): the twin of torch_pairwise.py, the same contract (backends/__init__.py), exact in the
same sense, at O(L·log n + n²) per row instead of O(n·L).

Batched over rows, with no loop over rows or positives (only over row and positive *blocks*,
to bound memory): the positives are compacted by a cumsum scatter and sorted (only them);
every element finds, by ``searchsorted`` over the breakpoints, how many positives see it
saturated (b) and how many on their ramp (a ≥ b); histograms by a and by b with suffix sums
give each positive's F and F'; the negatives' gradient is ``α + β·s`` gathered from prefix
sums of the coefficients. The label-conditioned terms among positives (T, Z, C, D and the
positives' gradient) are taken P×P, like torch_pairwise's positive block — the "small n" variant
of docs/DESIGN.md §5b, which keeps the code free of a vectorised Fenwick tree.

Band sums (differences of prefix sums over a whole row) are taken in float64; the P×P sums
among positives in the accumulation dtype, as torch_pairwise takes them; results come back in
the accumulation dtype. Memory: about ten [rows, L] float64 and ten
[rows, positives, positive block] accumulation-dtype temporaries, rows and blocks sized by
``PAIR_BUDGET``: ~10 · PAIR_BUDGET · 8 bytes (≈ 160 MiB) at most, plus O(M·L). Rows must hold
finite unpruned scores and a δ that resolves at their scale (cost_model routes the others to
torch_pairwise). The positive counts are read
on the host to size the blocks, as in torch_pairwise. Deterministic on every device: on CUDA the
histograms' suffix sums come from a stable sort of the bucket indices and prefix sums, since
``scatter_add_``'s float atomics there would change the last bits from run to run; on the CPU
``scatter_add_`` adds in index order and is 25–35% faster at the benchmark shapes.
"""
from __future__ import annotations

import torch

from . import EPS, accumulation_dtype
from .torch_pairwise import step, step_slope

PAIR_BUDGET = 1 << 21
WORK = torch.float64
# Histograms by stable sort (deterministic everywhere) or by scatter_add_ (deterministic on
# the CPU only); None: by device. The tests run both on the CPU.
SORTED_HISTOGRAMS = None


def rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad):
    acc = accumulation_dtype(scores.dtype)
    m, length = scores.shape
    s = scores.to(WORK)
    y = labels.to(WORK)
    pos = y > pos_thr
    npos = pos.sum(1)
    rank = s.new_zeros(m)
    sort = s.new_zeros(m)
    grad = s.new_zeros(m, length) if need_grad else None
    counts = npos.tolist()
    pmax = max(counts, default=0)
    if pmax > 0:
        block_p = min(pmax, max(1, PAIR_BUDGET // pmax))
        block_r = max(1, PAIR_BUDGET // max(length, pmax * block_p))
        for r0 in range(0, m, block_r):
            rows = slice(r0, min(m, r0 + block_r))
            p = max(counts[rows])
            if p == 0:
                continue
            out = _rows(s[rows], y[rows], pos[rows], npos[rows], p, block_p, delta, exact,
                        need_grad, scores.dtype)
            rank[rows], sort[rows] = out[0], out[1]
            if need_grad:
                grad[rows] = out[2]
    grad = grad.to(acc) if need_grad else scores.new_empty(0, dtype=acc)
    return rank.to(acc), sort.to(acc), npos.to(torch.int32), grad


def _suffix(h):
    """Entry q = Σ_{q' ≥ q} h[q'] along dim 1."""
    return h.flip(1).cumsum(1).flip(1)


def _suffix_by(idx, values, p):
    """For each v of ``values`` ([R, L]): [R, p], entry k = Σ_{j : idx_j > k} v_j, k = 0..p−1.

    A histogram by ``idx`` (0..p) with suffix sums, taken by one stable sort of ``idx`` and
    suffix sums in that order (from the top, as a histogram's would be, so a small tail is
    not a difference of large sums): the same additions in the same order on every run and
    device (``scatter_add_`` would add in whatever order CUDA's atomics land).
    """
    if not (idx.is_cuda if SORTED_HISTOGRAMS is None else SORTED_HISTOGRAMS):
        return [_suffix(v.new_zeros(idx.shape[0], p + 1).scatter_add_(1, idx, v))[:, 1:]
                for v in values]
    key, order = torch.sort(idx, dim=1, stable=True)
    bound = torch.arange(1, p + 1, device=idx.device).expand(idx.shape[0], p).contiguous()
    first = torch.searchsorted(key, bound)          # first sorted slot with idx > k
    out = []
    for v in values:
        tail = torch.nn.functional.pad(v.gather(1, order).flip(1).cumsum(1).flip(1), (0, 1))
        out.append(tail.gather(1, first))           # tail[t] = Σ over sorted slots ≥ t
    return out


def _prefix0(v):
    """[R, P] -> [R, P + 1]: entry k = Σ_{k' < k} v[k']."""
    return torch.nn.functional.pad(v.cumsum(1), (1, 0))


def _ramp_mass(c, cs, s_i, inv2d):
    """Σ_band c_j·H(s_j − s_i) from the band's Σc and Σc·s; an exact 0 for an empty band."""
    return torch.where(c == 0, 0.0, (cs - s_i * c) * inv2d + 0.5 * c)


def _rows(s, y, pos, npos, p, block_p, delta, exact, need_grad, pp_dtype):
    """Rows [R, L] with at most p positives -> (rank [R], sort [R], grad [R, L] or None)."""
    r, length = s.shape
    dev = s.device
    hard = delta == 0
    inv2d = 0.0 if hard else 0.5 / delta
    inf = torch.inf

    # Positives into slots [R, p] in index order (others into a dump slot p), then sorted by
    # score; padded slots hold +inf, beyond every breakpoint a finite score can reach.
    slot = torch.where(pos, pos.cumsum(1) - 1, p)
    elem = torch.arange(length, device=dev).expand(r, length)
    u = s.new_full((r, p + 1), inf).scatter_(1, slot, s)[:, :p]
    pe = torch.full((r, p + 1), length, device=dev).scatter_(1, slot, elem)[:, :p]
    py = s.new_zeros(r, p + 1).scatter_(1, slot, y)[:, :p]
    u, order = torch.sort(u, dim=1, stable=True)
    pe = pe.gather(1, order)
    py = py.gather(1, order)
    ok = torch.arange(p, device=dev) < npos[:, None]
    # Relative to the median positive: band sums cancel less (exact for float32 scores).
    offset = u.gather(1, (npos // 2)[:, None])
    offset = torch.where(npos[:, None] > 0, offset, 0.0)      # an empty row sees nothing
    u = u - offset
    sq = s - offset

    # a_j = #{k : lo_k < s_j}, b_j = #{k : hi_k ≤ s_j}: positives [0, b) see j saturated,
    # [b, a) on their ramp (lo_k is stored as the next double above u_k − δ, so that one
    # upper-bound search answers the strict side too). δ = 0: a = b = #{u_k ≤ s_j}.
    if hard:
        a = b = torch.searchsorted(u, sq, right=True)
    else:
        lo = torch.nextafter(u - delta, u.new_full((), inf))
        a = torch.searchsorted(lo, sq, right=True)
        b = torch.searchsorted(u + delta, sq, right=True)
    live = a > 0                                    # seen by some positive (else pruned)
    negw = (~pos & live).to(WORK)
    sq = torch.where(live, sq, 0.0)
    uf = torch.where(ok, u, 0.0)                    # padded slots: harmless finite values

    # Negatives: F_k = #{b > k} + ramp over {b ≤ k < a}, from histograms by a and by b.
    (nb, nb_s) = _suffix_by(b, (negw, negw * sq), p)
    if hard:
        fp_count = nb
        ramp_n = torch.zeros_like(nb)
    else:
        (na, na_s) = _suffix_by(a, (negw, negw * sq), p)
        ramp_n = na - nb
        ramp_s = na_s - nb_s
        fp_count = nb + _ramp_mass(ramp_n, ramp_s, uf, inv2d)

    # Positives among themselves, P×P in blocks of block_p positives i, in the accumulation
    # dtype (these are plain sums over the positives, not band differences): each block's
    # sums give its coefficients at once, and with them its share of the positives' gradient.
    acc = accumulation_dtype(pp_dtype)
    up = uf.to(acc)
    yp = py.to(acc)
    gap = 1 - yp                                            # 1 − y_j
    f_all = fp_count.to(acc)
    fd_all = (ramp_n * inv2d).to(acc)
    zero = up.new_zeros(())
    lr_sum = up.new_zeros(r)
    es_sum = up.new_zeros(r)
    first, self_term = [], []
    g_pos = up.new_zeros(r, p)
    for p0 in range(0, p, block_p):
        blk = slice(p0, min(p, p0 + block_p))
        x = up[:, None, :] - up[:, blk, None]               # x_ij = s_j − s_i, [R, Pb, P]
        mask = ok[:, None, :]
        upper = yp[:, None, :] >= yp[:, blk, None]          # j ∈ T_i
        h = step(x, delta) * mask
        h_upper = h * upper
        h_lower = h - h_upper
        i_ok = ok[:, blk]
        f = f_all[:, blk]
        t_mass = h_upper.sum(-1)
        z_mass = h_lower.sum(-1)
        c_sum = h @ gap[:, :, None]
        d_sum = (h_upper @ gap[:, :, None]).squeeze(-1)
        c_sum = c_sum.squeeze(-1)
        a_safe = torch.where(i_ok, t_mass + z_mass, 1.0)
        t_safe = torch.where(i_ok, t_mass, 1.0)
        rank_error = torch.where(i_ok, f / (a_safe + f), zero)
        sort_error = torch.where(i_ok, c_sum / a_safe - d_sum / t_safe, zero)
        lr_sum += rank_error.sum(1)
        es_sum += sort_error.sum(1)
        if not need_grad:
            continue
        if not exact:
            has_fp = i_ok & (f > EPS)
            has_lower = i_ok & (z_mass > EPS)
            first.append(torch.where(has_fp, rank_error / f, zero))          # r_i
            q = torch.where(has_lower, sort_error / z_mass, zero)            # q_i
            self_term.append(-(torch.where(has_fp, rank_error, zero)
                               + torch.where(has_lower, sort_error, zero)))
            g_pos += (q[:, None, :] @ h_lower).squeeze(1)
            continue
        denom = a_safe + f
        d_f, d_a, d_c = a_safe / denom ** 2, -f / denom ** 2 - c_sum / a_safe ** 2, 1 / a_safe
        d_t, d_d = d_sum / t_safe ** 2, -1 / t_safe
        d_f, d_a, d_c, d_t, d_d = (torch.where(i_ok, v, zero) for v in (d_f, d_a, d_c, d_t, d_d))
        hp = step_slope(x, delta) * mask
        hp_upper = hp * upper
        first.append(d_f)
        self_term.append(-(d_f * fd_all[:, blk] + d_a * hp.sum(-1)
                           + d_c * (hp @ gap[:, :, None]).squeeze(-1)
                           + d_t * hp_upper.sum(-1)
                           + d_d * (hp_upper @ gap[:, :, None]).squeeze(-1)))
        on_all = ((d_a[:, None, :] @ hp) + gap[:, None, :] * (d_c[:, None, :] @ hp)).squeeze(1)
        on_upper = ((d_t[:, None, :] @ hp_upper)
                    + gap[:, None, :] * (d_d[:, None, :] @ hp_upper)).squeeze(1)
        g_pos += on_all + on_upper
    n = npos.clamp(min=1).to(WORK)
    if not need_grad:
        return lr_sum.to(WORK) / n, es_sum.to(WORK) / n, None

    # Negatives' gradient: α + β·s from prefix sums (float64) over the sorted positives.
    first = torch.cat(first, 1).to(WORK)
    pre = _prefix0(first)
    dr = pre.gather(1, a) - pre.gather(1, b)
    if exact:
        g_neg = dr * inv2d
    else:
        pre_u = _prefix0(first * uf)
        dru = pre_u.gather(1, a) - pre_u.gather(1, b)
        g_neg = pre.gather(1, b) + 0.5 * dr + (sq * dr - dru) * inv2d
    g_neg = g_neg * negw
    g_pos = torch.where(ok, g_pos.to(WORK) + torch.cat(self_term, 1).to(WORK), 0.0)
    # One addend per element (positives have distinct indices; padded slots add 0 to the dump
    # column l), so this scatter_add_ is deterministic even with atomics.
    grad = torch.nn.functional.pad(g_neg, (0, 1)).scatter_add_(1, pe, g_pos)[:, :length]
    return lr_sum.to(WORK) / n, es_sum.to(WORK) / n, grad / n[:, None]
