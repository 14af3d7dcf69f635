"""The core of docs/DESIGN.md §2 written as the slow, obvious loop: one positive at a time,
float64.

Independent of the package's vectorised code (it imports nothing from rspose_kernels), so
the torch backend is checked against the definition, not against itself.
"""
import torch

EPS = 1e-10


class _Ramp(torch.autograd.Function):
    """H(x) = clamp(x/(2δ) + 1/2, 0, 1) with the slope of docs/DESIGN.md §2: H'(x) = 1/(2δ)
    for |x| < δ and 0 elsewhere, at x = ±δ too (autograd of clamp would pass the slope at
    both ends)."""

    @staticmethod
    def forward(ctx, x, delta):
        ctx.save_for_backward(x)
        ctx.delta = delta
        return torch.clamp(x / (2 * delta) + 0.5, 0, 1)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        inside = (x.abs() < ctx.delta).to(grad.dtype)
        return grad * inside / (2 * ctx.delta), None


def smoothed_step(x, delta):
    if delta > 0:
        return _Ramp.apply(x, delta)
    return (x >= 0).double()


def positive_terms(s, y, i, P, delta):
    """For positive i: H(x_i·), F_i, ℓR_i and eS_i, straight from the definitions."""
    N = ~P
    h = smoothed_step(s - s[i], delta)
    A = h[P].sum()
    F = h[N].sum()
    l_rank = F / (A + F)
    l_sort = (h[P] * (1 - y[P])).sum() / A
    T = P & (y >= y[i])
    l_sort_target = (h[T] * (1 - y[T])).sum() / h[T].sum()
    return h, F, l_rank, l_sort - l_sort_target


def row_loss(s, y, delta, pos_thr):
    """rank_row, sort_row of one row; differentiable in s (autograd gives the exact gradient)."""
    P = y > pos_thr
    if P.sum() == 0:
        return s.sum() * 0, s.sum() * 0
    terms = [positive_terms(s, y, i, P, delta) for i in torch.nonzero(P).flatten().tolist()]
    return (torch.stack([t[2] for t in terms]).mean(),
            torch.stack([t[3] for t in terms]).mean())


def row_identity_grad(s, y, delta, pos_thr):
    """The Rank & Sort identity-update gradient of one row, rule by rule from docs/DESIGN.md §2."""
    s = s.detach()
    P = y > pos_thr
    N = ~P
    g = torch.zeros_like(s)
    n = int(P.sum())
    if n == 0:
        return g
    for i in torch.nonzero(P).flatten().tolist():
        h, F, l_rank, e_sort = positive_terms(s, y, i, P, delta)
        if F > EPS:
            g[i] -= l_rank
            g[N] += h[N] * l_rank / F
        m = (P & (y < y[i])).double() * h
        Z = m.sum()
        if Z > EPS:
            g[i] -= e_sort
            g += m * e_sort / Z
    return g / n


def rows(scores, labels, delta, pos_thr, grad_mode="identity"):
    """(rank [M], sort [M], grad [M, L]) for 2D float64 inputs."""
    ranks, sorts, grads = [], [], []
    for s, y in zip(scores.double(), labels.double()):
        s = s.clone().requires_grad_(True)
        r, so = row_loss(s, y, delta, pos_thr)
        if grad_mode == "exact":
            (g,) = torch.autograd.grad(r + so, s, allow_unused=True)
            g = torch.zeros_like(s) if g is None else g
        else:
            g = row_identity_grad(s, y, delta, pos_thr)
        ranks.append(r.detach())
        sorts.append(so.detach())
        grads.append(g)
    m, length = scores.shape
    if m == 0:
        z = torch.zeros(0, dtype=torch.float64)
        return z, z, torch.zeros(0, length, dtype=torch.float64)
    return torch.stack(ranks), torch.stack(sorts), torch.stack(grads)
