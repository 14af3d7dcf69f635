"""The Rank & Sort core as a torch.library custom op, with its fake and autograd.

One op serves every backend (its name is an argument), so torch.compile sees a single opaque
node: no graph break, whatever the backend does inside. The backend computes the per-row
gradient in the forward, only when one is needed; backward scales it by the upstream
gradient of each row.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .backends import accumulation_dtype
from .dispatch import backend_fn


@torch.library.custom_op("rspose_kernels::rank_sort_rows", mutates_args=())
def rank_sort_rows(scores: Tensor, labels: Tensor, delta: float, pos_thr: float,
                   exact: bool, need_grad: bool, backend: str, algorithm: str = "pairwise"
                   ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Rows [M, L] -> (loss_rows, rank_rows, sort_rows, npos, grad_rows or empty).

    ``algorithm`` as dispatch.resolve_algorithm returns it."""
    rank, sort, npos, grad = backend_fn(backend)(scores, labels, delta, pos_thr, exact,
                                                  need_grad, algorithm=algorithm)
    return rank + sort, rank, sort, npos, grad


@rank_sort_rows.register_fake
def _(scores, labels, delta, pos_thr, exact, need_grad, backend, algorithm="pairwise"):
    m = scores.shape[0]
    acc = accumulation_dtype(scores.dtype)
    row = scores.new_empty(m, dtype=acc)
    grad = scores.new_empty(scores.shape if need_grad else (0,), dtype=acc)
    return row, torch.empty_like(row), torch.empty_like(row), \
        scores.new_empty(m, dtype=torch.int32), grad


def _setup_context(ctx, inputs, output):
    # Only loss_rows carries a gradient; rank/sort are detached logging values. Unused output
    # gradients stay None rather than zero tensors: autograd would otherwise allocate and fill
    # a [M, L] zero gradient for the grad output on every backward (0.9 ms a simcc call).
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(output[4])
    ctx.scores_dtype = inputs[0].dtype


def _backward(ctx, grad_loss, grad_rank, grad_sort, grad_npos, grad_grad):
    (grad_rows,) = ctx.saved_tensors
    if grad_loss is None:   # nothing flowed into loss_rows (set_materialize_grads(False))
        return None, None, None, None, None, None, None, None
    if grad_rows.dim() != 2:
        raise RuntimeError("rank_sort_rows: backward needs the forward to run with "
                           "need_grad=True")
    # Scale in the accumulation dtype, then round once to the scores' dtype: a half gradient
    # cast before the upstream scale (1/Σw, a GradScaler factor) would underflow.
    grad_scores = (grad_rows * grad_loss.to(grad_rows.dtype)[:, None]).to(ctx.scores_dtype)
    return grad_scores, None, None, None, None, None, None, None


rank_sort_rows.register_autograd(_backward, setup_context=_setup_context)
