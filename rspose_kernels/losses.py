"""The public Rank & Sort losses: argument checks, rows, the op, the reduction."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import checks, defaults, distributed
from .backends import accumulation_dtype
from .dispatch import resolve_algorithm, resolve_backend
from .ops import rank_sort_rows

# Defaults the paper does not state; ours, measured (defaults.py).
DEFAULT_DELTA = defaults.DELTA
DEFAULT_POS_THR = defaults.CORE_POS_THR
HEATMAP_POS_THR = defaults.HEATMAP_POS_THR
SIMCC_POS_THR = defaults.SIMCC_POS_THR


class RankSortOutput(NamedTuple):
    """What every Rank & Sort loss returns (docs/DESIGN.md §2).

    Attributes:
        loss: rank + sort, reduced; the only one that carries the gradient.
        rank: the reduced ranking error, detached (for logging).
        sort: the reduced sorting error, detached (for logging).
    """
    loss: Tensor
    rank: Tensor
    sort: Tensor


def rank_sort_loss(scores: Tensor, labels: Tensor, *, weight: Tensor | None = None,
                   delta: float = DEFAULT_DELTA, pos_thr: float = DEFAULT_POS_THR,
                   reduction: str = "mean", grad_mode: str = "identity",
                   backend: str = "auto", algorithm: str = "auto",
                   process_group=None) -> RankSortOutput:
    """Rank & Sort loss over the rows (last dim) of ``scores`` (docs/DESIGN.md §2).

    Each row ``[L]`` is ranked on its own: an element whose label is above ``pos_thr`` is a
    positive, its label its localisation quality. A row with no positive is empty: 0 loss,
    no gradient, left out of the mean.

    Args:
        scores: logits ``[..., L]`` (L ≥ 1), any float dtype; half precision is accumulated
            in float32.
        labels: same shape and device, values in [0, 1]. Constants: a tensor that requires
            grad is refused (the loss has no gradient with respect to it).
        weight: per-row weights ≥ 0, broadcastable to ``scores.shape[:-1]``; None: all 1.
        delta: half-width δ ≥ 0 of the smoothed step H, in logit units (0: the hard step).
        pos_thr: τ ≥ 0; labels above it are positives. Default 0 (generic rows).
        reduction: "mean" (Σ w·loss / Σ w over valid rows; 0, still in the graph, when no
            row is valid), "sum", or "none" (per-row values of shape ``scores.shape[:-1]``).
        grad_mode: "identity" (the Rank & Sort identity update, default) or "exact" (the
            true derivative of rank + sort; needs delta > 0).
        backend: "auto", "torch", "cpu", "cuda" or "triton" (``rk.available_backends``).
        algorithm: "pairwise", "bucketed" (docs/DESIGN.md §5b: same results, faster for rows
            with many positives) or "auto" (per row, by the backend's cost model); see
            ``rk.available_algorithms(backend)``.
        process_group: None reduces this process's rows. A torch.distributed group reduces
            the rows of all its ranks (docs/DESIGN.md §10; "mean": Σ w·loss / Σ valid w over
            every rank, one all-reduce of four numbers). The returned values are then the
            global ones, the same on every rank, and the loss's gradient is the world size W
            times this rank's part of the global gradient, so that after DDP averages the
            ranks' gradients each parameter has the gradient of one process on the
            concatenated batch. Every rank of the group must call it.

    Returns:
        ``RankSortOutput(loss, rank, sort)``: float32 for float32 and half-precision scores,
        float64 for float64; the gradient comes back in the scores' dtype.

    Raises:
        TypeError: scores, labels or weight is not a tensor, or process_group is not a
            ProcessGroup.
        ValueError: a non-float dtype, mismatched shapes or devices, labels that require
            grad, an empty last dim, delta or pos_thr negative or not finite, an unknown
            reduction, grad_mode, backend or algorithm, grad_mode="exact" with delta = 0, a
            weight shape that does not broadcast, reduction="none" with a process group;
            labels outside [0, 1] or negative weights on CPU (on CUDA and under
            torch.compile these are device-side asserts).
        RuntimeError: the backend is not available for these tensors here, or a process
            group is given while torch.distributed is not initialised.
    """
    checks.tensor("scores", scores)
    checks.tensor("labels", labels)
    checks.same_shape("labels", labels, "scores", scores)
    checks.same_device("labels", labels, "scores", scores)
    checks.no_gradient_wanted("labels", labels)
    if scores.shape[-1] < 1:
        raise ValueError(f"scores: expected a last dimension of at least 1, "
                         f"got shape {tuple(scores.shape)}")
    checks.number("delta", delta, minimum=0)
    # τ < 0 would make every pixel (and every masked −inf pixel) a positive.
    checks.number("pos_thr", pos_thr, minimum=0)
    checks.choice("reduction", reduction, checks.REDUCTIONS)
    checks.choice("grad_mode", grad_mode, checks.GRAD_MODES)
    distributed.check_group(process_group, reduction)
    if grad_mode == "exact" and delta == 0:
        raise ValueError("delta: grad_mode='exact' needs delta > 0 (the hard step has no "
                         "derivative)")
    lead = scores.shape[:-1]
    if weight is not None:
        checks.row_weight("weight", weight, lead, scores)
    name = resolve_backend(backend, scores.device, algorithm)
    algorithm = resolve_algorithm(algorithm, name)
    checks.labels_in_unit_range("labels", labels)

    acc = accumulation_dtype(scores.dtype)
    length = scores.shape[-1]
    rows = scores.reshape(-1, length).contiguous()
    row_labels = labels.reshape(-1, length).to(acc).contiguous()
    need_grad = torch.is_grad_enabled() and scores.requires_grad
    loss_rows, rank_rows, sort_rows, npos, _ = rank_sort_rows(
        rows, row_labels, float(delta), float(pos_thr), grad_mode == "exact", need_grad, name,
        algorithm)
    if weight is None:
        w = torch.ones_like(loss_rows)
    else:
        w = weight.to(acc).broadcast_to(lead).reshape(-1)
    return _reduce(loss_rows, rank_rows.detach(), sort_rows.detach(), npos, w, reduction, lead,
                   process_group)


def _reduce(loss_rows, rank_rows, sort_rows, npos, w, reduction, lead,
            process_group=None) -> RankSortOutput:
    if reduction == "none":
        out = [(w * v).reshape(lead) for v in (loss_rows, rank_rows, sort_rows)]
    else:
        out = [(w * v).sum() for v in (loss_rows, rank_rows, sort_rows)]
    if reduction == "mean":
        # Over valid rows (weight > 0 and not empty); 0, still in the graph, when none is.
        valid_weight = torch.where((w > 0) & (npos > 0), w, torch.zeros_like(w)).sum()
        if process_group is not None:   # over every rank's rows (docs/DESIGN.md §10)
            return RankSortOutput(*distributed.global_reduce(out, valid_weight, process_group))
        denom = torch.where(valid_weight > 0, valid_weight, torch.ones_like(valid_weight))
        out = [v / denom for v in out]
    elif process_group is not None and reduction == "sum":
        return RankSortOutput(*distributed.global_reduce(out, None, process_group))
    # rank and sort are for logging: detached even when the weights carry a gradient.
    return RankSortOutput(out[0], out[1].detach(), out[2].detach())


def keypoint_row_weight(target_weight, b, k, name):
    """mmpose keeps target weights as [B, K] or [B, K, 1, ...]: take the [B, K] part."""
    if target_weight is None:
        return None
    if not isinstance(target_weight, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None, "
                        f"got {type(target_weight).__name__}")
    if target_weight.shape[:2] != (b, k) or any(d != 1 for d in target_weight.shape[2:]):
        raise ValueError(f"{name}: expected shape [{b}, {k}] (or [{b}, {k}, 1, ...]), "
                         f"got {tuple(target_weight.shape)}")
    return target_weight.reshape(b, k)


def spatial_rs_loss(heatmaps: Tensor, targets: Tensor, target_weight: Tensor | None = None,
                    **kw) -> RankSortOutput:
    """Spatial Rank & Sort loss: one ranking row per heatmap of ``[B, K, H, W]``.

    Args:
        heatmaps: logits ``[B, K, ...]`` (at least 3 dims; every dim after K is one row).
        targets: same shape, in [0, 1] (mmpose's Gaussian heatmaps); must not require grad.
        target_weight: ``[B, K]`` (or mmpose's ``[B, K, 1, ...]``), weights ≥ 0 of the rows;
            None: all 1.
        **kw: the keyword arguments of :func:`rank_sort_loss` (delta, pos_thr, reduction,
            grad_mode, backend, algorithm, process_group); ``pos_thr`` defaults to the
            heatmap τ, ``rspose_kernels.HEATMAP_POS_THR``.

    Returns:
        ``RankSortOutput`` over the B·K rows (``reduction="none"``: shaped ``[B, K]``).

    Raises:
        TypeError: heatmaps, targets or target_weight is not a tensor (or None).
        ValueError: fewer than 3 dims, targets of another shape or requiring grad, a
            target_weight of another shape, and everything :func:`rank_sort_loss` refuses.
        RuntimeError: as :func:`rank_sort_loss`.
    """
    checks.tensor("heatmaps", heatmaps, min_dim=3)
    checks.tensor("targets", targets)
    checks.same_shape("targets", targets, "heatmaps", heatmaps)
    checks.no_gradient_wanted("targets", targets)
    kw.setdefault("pos_thr", HEATMAP_POS_THR)
    b, k = heatmaps.shape[:2]
    weight = keypoint_row_weight(target_weight, b, k, "target_weight")
    return rank_sort_loss(heatmaps.flatten(2), targets.flatten(2), weight=weight, **kw)


def simcc_rs_loss(pred, target, target_weight: Tensor | None = None, **kw) -> RankSortOutput:
    """SimCC Rank & Sort loss: the mean of the x-vector and y-vector losses.

    Args:
        pred: ``(x [B, K, Wx], y [B, K, Hy])`` logits, with the same leading dims.
        target: ``(gx, gy)`` Gaussian labels, shaped like ``pred``; each row is rescaled to
            peak 1 (mmpose may normalise them to sum 1). Must not require grad.
        target_weight: ``[B, K]`` (or ``[B, K, 1, ...]``) row weights ≥ 0; None: all 1.
        **kw: the keyword arguments of :func:`rank_sort_loss`; ``pos_thr`` defaults to
            ``rspose_kernels.SIMCC_POS_THR`` = exp(−4.5): the bins within 3σ of the joint.

    Returns:
        ``RankSortOutput``, each field the mean of the x and y axes' results.

    Raises:
        TypeError: an element of pred or target, or target_weight, is not a tensor.
        ValueError: pred or target is not a pair, an axis with fewer than 3 dims, a target
            of another shape, device or requiring grad, x and y with different leading dims,
            and everything :func:`rank_sort_loss` refuses.
        RuntimeError: as :func:`rank_sort_loss`.
    """
    for name, pair in (("pred", pred), ("target", target)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{name}: expected a pair (x, y) of tensors, "
                             f"got {type(pair).__name__}")
    kw.setdefault("pos_thr", SIMCC_POS_THR)
    for axis, p, t in zip("xy", pred, target):   # both axes checked before either runs
        checks.tensor(f"pred[{axis}]", p, min_dim=3)
        checks.tensor(f"target[{axis}]", t)
        checks.same_shape(f"target[{axis}]", t, f"pred[{axis}]", p)
        checks.same_device(f"target[{axis}]", t, f"pred[{axis}]", p)
        checks.no_gradient_wanted(f"target[{axis}]", t)
    if pred[1].shape[:-1] != pred[0].shape[:-1]:
        raise ValueError(f"pred[y]: expected the leading dims of pred[x] "
                         f"{tuple(pred[0].shape[:-1])}, got {tuple(pred[1].shape[:-1])}")
    checks.same_device("pred[y]", pred[1], "pred[x]", pred[0])
    outs = []
    for p, t in zip(pred, target):
        peak = t.amax(-1, keepdim=True)
        t = t / torch.where(peak > 0, peak, torch.ones_like(peak))
        b, k = p.shape[:2]
        weight = keypoint_row_weight(target_weight, b, k, "target_weight")
        outs.append(rank_sort_loss(p, t, weight=weight, **kw))
    return RankSortOutput(*((a + b) / 2 for a, b in zip(*outs)))
