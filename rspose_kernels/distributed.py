"""Distributed training (docs/DESIGN.md §10): Instance-Sort over the global batch, the global
mean.

Under DistributedDataParallel rank r holds B_r instances and DDP *averages* the ranks'
gradients (sums them and divides by the world size W). For every parameter to get the
gradient one process would get from the same loss L on the concatenated batch, each rank
returns a loss whose value is L (the same number on every rank) and whose gradient is W times
∂L with respect to its own inputs: (1/W)·Σ_r W·∂L/∂inputs_r = ∂L. ``world_scaled`` is that
step; everything else builds L with this rank's share live (differentiable) and the other
ranks' shares as constants.

What crosses ranks: the per-item (confidence, quality) of Instance-Sort, B·K numbers per rank
(an item is valid where its quality is > 0; other slots carry score −inf and quality 0, the
harmless negatives of pose.py), and the four sums of a mean (one all-reduce). The backward
pass runs no collective: each rank's gradient goes into its own items only, so ranks never
wait on each other there.

Ranks may hold different B: their item counts are all-gathered first and every rank pads to
the largest with (−inf, 0) slots. The counts are host integers (the gathered tensor's shape
needs them), so they go through a CPU process group: the group itself when its backend has a
CPU side (gloo, ``"cpu:gloo,cuda:nccl"``), else a gloo group over the same ranks, made once.
So with NCCL the CUDA stream is never synchronised; the only waits are the collectives.

torch.compile: the mean's all-reduce traces (dynamo turns it into a functional collective).
The item gather cannot: its output shape depends on the other ranks' batch sizes, which only
the size exchange knows, at run time. It is the one graph break (``gather_items`` runs eagerly,
under ``torch.compiler.disable``); the graphs before and after it stay compiled.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

# Backends that take CPU tensors (a mixed backend is written "cpu:gloo,cuda:nccl").
_CPU_BACKENDS = ("gloo", "mpi", "ucc")
_HOST_GROUPS: dict = {}
# torch 2.13 renamed all_gather_into_tensor (same semantics; the old name warns). Builds
# without torch.distributed have neither; check_group then refuses every group.
_all_gather_single = (getattr(dist, "all_gather_single", None)
                      or getattr(dist, "all_gather_into_tensor", None))


def default_group():
    """The group ``RSPoseLoss(sync=True)`` reduces over.

    Returns:
        ``torch.distributed.group.WORLD`` when torch.distributed is initialised with more
        than one process, else None (so ``sync=True`` is then a no-op).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist.group.WORLD if dist.get_world_size() > 1 else None


def check_group(process_group, reduction: str = "mean") -> None:
    """Check a ``process_group=`` argument before any work (docs/DESIGN.md §9).

    Args:
        process_group: None (local), or a ProcessGroup of an initialised torch.distributed.
        reduction: the call's reduction; a group needs "mean" or "sum".

    Raises:
        RuntimeError: a group is given but torch.distributed is not initialised.
        TypeError: process_group is neither None nor a ProcessGroup.
        ValueError: a group with ``reduction="none"``.
    """
    if process_group is None:
        return
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("process_group: torch.distributed is not initialised; call "
                           "torch.distributed.init_process_group first, or pass None")
    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(f"process_group: expected None or a torch.distributed ProcessGroup "
                        f"(e.g. torch.distributed.group.WORLD), "
                        f"got {type(process_group).__name__}")
    if reduction == "none":
        raise ValueError("process_group: needs reduction='mean' or 'sum' (per-row values "
                         "of reduction='none' stay local)")


def world_scaled(live: Tensor, group, value: Tensor | None = None) -> Tensor:
    """A loss whose value is ``value`` and whose gradient is W times that of ``live``.

    DDP divides the summed gradients by the world size W; this multiplies them back, so each
    rank's share of the global gradient arrives whole. ``live − live.detach()`` is exactly 0
    in the forward.

    Args:
        live: this rank's differentiable loss.
        group: the process group (its size is W).
        value: the value to return (the global loss); None: ``live``'s.

    Returns:
        A tensor shaped like ``value``.
    """
    value = live if value is None else value
    return value.detach() + dist.get_world_size(group) * (live - live.detach())


def global_reduce(sums: list, valid_weight: Tensor | None, group) -> tuple:
    """The reduction of ``losses._reduce`` over every rank's rows.

    One all-reduce of (at most) four numbers.

    Args:
        sums: this rank's weighted sums (loss, rank, sort), scalars.
        valid_weight: this rank's Σ valid w for "mean"; None for "sum".
        group: the process group.

    Returns:
        ``(loss, rank, sort)``, the global values, the same on every rank. The loss is
        ``world_scaled``: its gradient (to the scores, and to weights that require grad) is
        W times this rank's part of the global gradient. As ``losses._reduce``, a "mean" is
        0, still in the graph, when no row of any rank is valid.
    """
    local = list(sums) + ([] if valid_weight is None else [valid_weight])
    totals = torch.stack([v.detach() for v in local])
    dist.all_reduce(totals, group=group)
    # This rank's share live inside the global sum: value ≈ total, gradient 1 to the share.
    live = [v + (t - v.detach()) for v, t in zip(local, totals.unbind())]
    if valid_weight is None:
        return world_scaled(live[0], group, totals[0]), totals[1], totals[2]
    total_weight = totals[3]
    # As losses._reduce: 0 (still in the graph) when no row of any rank is valid.
    some = total_weight > 0
    denom = torch.where(some, total_weight, torch.ones_like(total_weight))
    denom_live = torch.where(some, live[3], torch.ones_like(total_weight))
    loss = world_scaled(live[0] / denom_live, group, totals[0] / denom)
    return loss, totals[1] / denom, totals[2] / denom


def has_cpu_side(backend: str) -> bool:
    """Whether a torch.distributed backend takes CPU tensors.

    Args:
        backend: a backend name: "gloo", "nccl", or a mixed one like "cpu:gloo,cuda:nccl".

    Returns:
        True for gloo, mpi and ucc, and for a mixed name with a "cpu:" part.
    """
    if ":" in backend:
        return any(part.split(":")[0] == "cpu" for part in backend.split(","))
    return backend in _CPU_BACKENDS


def _host_group(group):
    """A process group over ``group``'s ranks that takes CPU tensors (see the module doc)."""
    if has_cpu_side(str(dist.get_backend(group))):
        return group
    if group not in _HOST_GROUPS:
        # Only the group's members reach this (they all run the loss), in the same order.
        _HOST_GROUPS[group] = dist.new_group(dist.get_process_group_ranks(group),
                                             backend="gloo", use_local_synchronization=True)
    return _HOST_GROUPS[group]


def _gather_counts(count: int, group) -> list:
    """Every rank's item count, in group-rank order (host integers, no device sync)."""
    mine = torch.tensor([count], dtype=torch.int64)
    counts = torch.empty(dist.get_world_size(group), dtype=torch.int64)
    _all_gather_single(counts, mine, group=_host_group(group))
    return counts.tolist()


@torch.compiler.disable   # the one graph break: the output shape is known only at run time
def gather_items(scores: Tensor, labels: Tensor, group) -> tuple:
    """This rank's Instance-Sort row ``[1, n]`` → the global row ``[1, W·n_max]``.

    A collective: every rank of ``group`` must call it.

    Args:
        scores: confidences ``[1, n]`` with −inf on non-items (the row of pose.py).
        labels: qualities ``[1, n]`` with 0 on non-items, in the accumulation dtype.
        group: the process group.

    Returns:
        ``(scores [1, W·n_max], labels [1, W·n_max])``, rank-major like the concatenated
        batch, each rank padded to the largest count (at least 1) with (−inf, 0) slots. This
        rank's slice of the scores is ``scores`` itself (the gradient flows into it); the
        other ranks' slices are constants.
    """
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    scores, labels = scores.reshape(-1), labels.reshape(-1)
    n = scores.numel()
    n_max = max(max(_gather_counts(n, group)), 1)
    pad = (0, n_max - n)
    live = torch.nn.functional.pad(scores, pad, value=-math.inf)
    # One collective: scores and labels travel together in the labels' (accumulation) dtype,
    # which holds every score dtype exactly.
    packed = torch.stack([torch.nn.functional.pad(scores.detach().to(labels.dtype), pad,
                                                  value=-math.inf),
                          torch.nn.functional.pad(labels, pad, value=0.0)])
    # The concatenated output form: gloo takes no other (NCCL also takes a stacked one).
    gathered = packed.new_empty((world * 2, n_max))
    _all_gather_single(gathered, packed, group=group)
    gathered = gathered.view(world, 2, n_max)
    rows = list(gathered[:, 0].to(scores.dtype).unbind(0))
    rows[rank] = live
    return torch.cat(rows).reshape(1, -1), gathered[:, 1].reshape(1, -1)
