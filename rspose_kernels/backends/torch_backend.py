"""The `torch` backend: the pairwise reference (torch_pairwise.py) and its bucketed twin
(torch_bucketed.py), the rows split between them by cost_model.

With ``algorithm`` = "pairwise" torch_pairwise runs alone (the reference the tests trust);
with "bucketed" or "auto" the rows ``bucketed_plan`` picks go to torch_bucketed and the others
to torch_pairwise. Splitting reads the plan on the host, as the reference already reads its
positive counts.
"""
from __future__ import annotations

from . import Backend, cost_model, torch_bucketed, torch_pairwise

# Set by hand, not fitted: the torch code's per-call overheads swamp a fit at the sizes a CPU
# can time it on (docs/MEASUREMENTS.md, "torch cost constants"). They leave SimCC rows to the
# pairwise reference and send heatmap rows with many positives bucketed.
COST = cost_model.CostModel(per_negative=10.0, per_positive=10.0, positive_pairs=1.0)


def is_available(device_type: str) -> bool:
    return device_type in ("cpu", "cuda")


def bucketed_plan(scores, labels, delta, pos_thr, algorithm="auto"):
    # torch_pairwise does not prune: its ñ is every negative of the row.
    return cost_model.plan_rows(scores, labels, delta, pos_thr, algorithm, COST,
                                max_positives=scores.shape[1], prunes=False)


def rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad, algorithm="pairwise"):
    if algorithm == "pairwise":
        return torch_pairwise.rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad)
    plan = bucketed_plan(scores, labels, delta, pos_thr, algorithm)
    return split_rows(plan, scores, labels, delta, pos_thr, exact, need_grad,
                      torch_pairwise.rank_sort_rows, torch_bucketed.rank_sort_rows)


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


BACKENDS = (Backend(name="torch", devices=("cpu", "cuda"), algorithms=("pairwise", "bucketed"),
                    is_available=is_available, rank_sort_rows=rank_sort_rows,
                    bucketed_plan=bucketed_plan),)
