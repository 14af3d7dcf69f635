"""The constants and the per-row rule that each language writes once agree across languages.

Python: ``rspose_kernels.backends.EPS`` and ``ALGORITHM_CODES``, ``cost_model.RESOLVE``,
``SPAN_LIMIT`` and ``plan_rows``. C++: ``kEps`` (csrc/rank_sort_math.h), the ``Algorithm``
codes, ``kResolve``, ``kSpanLimit`` and ``takes_bucketed`` (csrc/rank_sort_bucketed_math.h),
which the CPU kernel and the CUDA compaction both call. A row routed differently on the host
and in a kernel would be a silent change of results.
"""
import math

import pytest
import torch

from rspose_kernels.backends import ALGORITHM_CODES, EPS, cost_model
from tests.reference.parity import require

native = require("rspose_kernels.backends.native", "RSPOSE_REQUIRE_NATIVE",
                 "rspose_kernels._C is not built")
_C = native._C


def test_eps_is_the_kernels():
    assert _C.EPS == EPS == 1e-10


def test_algorithm_codes_are_the_kernels():
    assert ALGORITHM_CODES == {"pairwise": _C.PAIRWISE, "bucketed": _C.BUCKETED,
                               "auto": _C.AUTO}


def test_bucketed_limits_are_the_kernels():
    assert _C.RESOLVE == cost_model.RESOLVE == 2.0 ** -20
    assert _C.SPAN_LIMIT == cost_model.SPAN_LIMIT == 2.0 ** 1000


def test_takes_bucketed_edges():
    cost = _C.CostModel(*native.CPU_COST)
    bucketed, auto, pairwise = _C.BUCKETED, _C.AUTO, _C.PAIRWISE

    def takes(n=10, nkeep=100, span=1.0, nonfinite=False, delta=0.5, algorithm=bucketed,
              max_pos=1000):
        return _C.takes_bucketed(n, nkeep, span, nonfinite, delta, algorithm, max_pos, cost)

    assert takes()
    assert not takes(algorithm=pairwise)
    assert not takes(n=0)
    assert not takes(n=1001) and takes(n=1000)                  # the capacity
    assert not takes(nonfinite=True)
    assert takes(span=0.5 / cost_model.RESOLVE)                 # δ = RESOLVE·span resolves
    assert not takes(span=math.nextafter(0.5 / cost_model.RESOLVE, math.inf))
    assert takes(delta=0.0, span=1e300)                          # the step divides by nothing
    assert not takes(delta=0.0, span=cost_model.SPAN_LIMIT)
    assert takes(delta=0.0, span=math.nextafter(cost_model.SPAN_LIMIT, 0.0))
    # auto: the cost model decides (one positive never goes bucketed).
    assert not takes(n=1, algorithm=auto)
    assert takes(n=300, nkeep=2700, algorithm=auto)
    assert not takes(n=30, nkeep=300, algorithm=auto)


def _rows(dtype, length=3000, seed=0):
    """Rows that probe every clause of the rule (and a mix of cost-model choices)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for frac in (0.0, 0.01, 0.1, 0.5, 1.0):
        s = torch.randn(length, generator=g, dtype=torch.float64)
        y = torch.rand(length, generator=g, dtype=torch.float64)
        y = torch.where(torch.rand(length, generator=g, dtype=torch.float64) < frac, y, 0 * y)
        rows.append((s, y))
    s, y = rows[2]
    one = torch.zeros_like(y)
    one[5] = 0.9
    rows.append((s, one))                                    # one positive
    for where, value in ((int(y.argmax()), math.nan),        # a NaN positive
                         (int(s.argmax()), math.nan),        # a NaN score (a NaN never prunes)
                         (int(s.argmax()), math.inf),        # +inf: live
                         (int(s.argmin()), -math.inf)):      # -inf: pruned (if a positive
        t = s.clone()                                        # stays above it)
        t[where] = value
        rows.append((t, y))
    rows.append((s * 1e7, y))                                # δ = 0.5 no longer resolves
    rows.append((s * 1e-3, y))
    if dtype == torch.float64:
        rows.append((s * 1e305, y))                          # differences could overflow
    scores = torch.stack([r[0] for r in rows]).to(dtype)
    labels = torch.stack([r[1] for r in rows]).to(dtype)
    return scores.contiguous(), labels.contiguous()


def _kernel_rows(scores, labels, delta, pos_thr, algorithm, cost):
    p = _C.RankSortParams()
    p.scores, p.labels = scores.data_ptr(), labels.data_ptr()
    p.M, p.L = scores.shape
    p.dtype = _C.FLOAT64 if scores.dtype == torch.float64 else _C.FLOAT32
    p.delta, p.pos_thr = delta, pos_thr
    p.algorithm = ALGORITHM_CODES[algorithm]
    p.cost = _C.CostModel(*cost)
    return torch.tensor(_C.bucketed_rows_cpu(p))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("delta", [0.0, 0.5, 1e-6])
@pytest.mark.parametrize("pos_thr", [0.0, 0.5])
def test_cpu_kernel_routes_rows_as_plan_rows(dtype, delta, pos_thr):
    scores, labels = _rows(dtype)
    seen = set()
    for algorithm in ("pairwise", "bucketed", "auto"):
        for cost in (native.CPU_COST, cost_model.CostModel(0.5, 2.0, 1.0)):
            got = _kernel_rows(scores, labels, delta, pos_thr, algorithm, cost)
            if algorithm == "pairwise":
                assert not got.any()
                continue
            want = cost_model.plan_rows(scores, labels, delta, pos_thr, algorithm, cost,
                                        max_positives=scores.shape[1])
            assert torch.equal(got, want), (algorithm, cost, got, want)
            seen |= set(got.tolist())
    assert seen == {False, True}   # not vacuous: both outcomes occur
