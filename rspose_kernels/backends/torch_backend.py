"""The `torch` backend: the pairwise reference (torch_ref.py) and its bucketed twin
(torch_bucketed.py), the rows split between them by cost_model.

Contract: backends/__init__.py, with ``algorithm`` = "pairwise" (torch_ref alone, the
reference the tests trust), "bucketed" or "auto" (the rows cost_model.plan_rows picks go to
torch_bucketed, the others to torch_ref). Splitting reads the plan on the host, as the
reference already reads its positive counts.
"""
from __future__ import annotations

import torch

from . import cost_model, torch_bucketed, torch_ref

def is_available(device_type: str) -> bool:
    return True


def rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad, algorithm="pairwise"):
    if algorithm == "pairwise":
        return torch_ref.rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad)
    plan = cost_model.plan_rows(scores, labels, delta, pos_thr, algorithm, "torch")
    return split_rows(plan, scores, labels, delta, pos_thr, exact, need_grad,
                      torch_ref.rank_sort_rows, torch_bucketed.rank_sort_rows)


def split_rows(plan, scores, labels, delta, pos_thr, exact, need_grad, pairwise, bucketed):
    """Rows where ``plan`` is True through ``bucketed``, the others through ``pairwise``."""
    picked = plan.nonzero().squeeze(1)
    if picked.numel() == plan.numel():
        return bucketed(scores, labels, delta, pos_thr, exact, need_grad)
    if picked.numel() == 0:
        return pairwise(scores, labels, delta, pos_thr, exact, need_grad)
    rest = (~plan).nonzero().squeeze(1)
    parts = [(idx, fn(scores.index_select(0, idx), labels.index_select(0, idx), delta,
                      pos_thr, exact, need_grad))
             for idx, fn in ((picked, bucketed), (rest, pairwise))]
    out = []
    for k, like in enumerate(parts[0][1]):
        if k == 3 and not need_grad:
            out.append(like)
            continue
        full = like.new_empty((scores.shape[0],) + like.shape[1:])
        for idx, res in parts:
            full.index_copy_(0, idx, res[k])
        out.append(full)
    return tuple(out)
