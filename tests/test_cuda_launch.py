"""The CUDA backend's host-side launch planning (csrc/cuda/rank_sort_launch.cuh, make_plan),
through _C, without a GPU: grids are capped by the SM count, rows are split only when there
are few of them, and the launch parameters come from the RSPOSE_CUDA_* variables."""
import pytest

from tests.reference.parity import require, require_cuda_build

native = require("rspose_kernels.backends.native", "RSPOSE_REQUIRE_NATIVE",
                 "rspose_kernels._C is not built")
_C = native._C


@pytest.fixture(autouse=True)
def _cuda_built():
    require_cuda_build(_C.has_cuda(), "_C was built without CUDA")


def tuning(sms=132, **kw):
    t = _C.CudaTuning()
    t.sms = sms
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def test_defaults_are_the_structs():
    t = _C.CudaTuning()
    assert (t.ctas_per_sm, t.warp_items_per_sm, t.max_split) == (4, 16, 32)


@pytest.mark.parametrize("m,length", [(1088, 3072), (272, 12288), (68, 49152), (1088, 384)])
def test_benchmark_shapes_run_persistent_grids_without_splitting(m, length):
    ctas_a, ctas_b, split = _C.cuda_plan(m, length, _C.FLOAT32, False, tuning())
    # Before: M·ceil(L/64) pass-A CTAs (52,224 at vitpose). Now a fixed 4 per SM.
    assert ctas_a == 132 * 4
    assert split == 1
    assert ctas_b == min(132 * 4, -(-m * (-(-length // 256) + 1) // 8))


def test_one_row_is_split_over_warps():
    # Instance-Sort: one row of B·K = 1088 items.
    ctas_a, ctas_b, split = _C.cuda_plan(1, 1088, _C.FLOAT32, False, tuning())
    assert ctas_a == 17                     # ceil(1088 / 64) blocks at most
    assert split == 32                      # capped by max_split
    assert ctas_b == -(-(1 * (5 + 1) * 32) // 8)
    assert _C.cuda_plan(1, 1088, _C.FLOAT32, False, tuning(max_split=4))[2] == 4
    # A split needs its partial sums: more workspace, still O(M·L).
    small = _C.cuda_workspace_bytes(1, 1088, _C.FLOAT32, False, True, tuning(max_split=1))
    big = _C.cuda_workspace_bytes(1, 1088, _C.FLOAT32, False, True, tuning())
    assert big - small >= 32 * 1088 * 4
    assert big < 1088 * 4 * 64


def test_grids_follow_the_sm_count():
    for sms in (1, 108, 132):
        ctas_a, ctas_b, _ = _C.cuda_plan(1088, 3072, _C.FLOAT64, True, tuning(sms, ctas_per_sm=2))
        assert ctas_a == ctas_b == 2 * sms


def test_tuning_from_environment(monkeypatch):
    monkeypatch.setattr(native, "_sm_count", lambda index: 114)
    monkeypatch.setenv("RSPOSE_CUDA_CTAS_PER_SM", "8")
    monkeypatch.setenv("RSPOSE_CUDA_MAX_SPLIT", "0")        # clamped to 1: no split
    t = native.cuda_tuning(0)
    assert (t.sms, t.ctas_per_sm, t.warp_items_per_sm, t.max_split) == (114, 8, 16, 1)
    monkeypatch.setenv("RSPOSE_CUDA_WARP_ITEMS_PER_SM", "many")
    with pytest.raises(ValueError, match="RSPOSE_CUDA_WARP_ITEMS_PER_SM"):
        native.cuda_tuning(0)


@pytest.mark.parametrize("m,length,dtype", [(1088, 3072, "FLOAT32"), (68, 49152, "FLOAT32"),
                                            (68, 49152, "FLOAT64"), (3, 37, "FLOAT16")])
def test_bucketed_workspace_only_when_asked_and_linear(m, length, dtype):
    # The bucketed rows' arrays (rank_sort_bucketed_kernels.cuh's BucketWs) exist only for
    # calls that may take the bucketed algorithm, and stay O(M·L): per row np ≤ max(64, L/8)
    # positives (sorted order, two buckets, F, F' in exact mode, two prefix sums), 2·np + 2
    # histogram entries (key, lo count, count, fixed-point sum, α, β: 40 B) and 4 B per
    # element for the negatives' buckets.
    code = getattr(_C, dtype)
    for exact in (False, True):
        pairwise = _C.cuda_workspace_bytes(m, length, code, exact, True, tuning())
        assert _C.cuda_workspace_bytes(m, length, code, exact, True, tuning(),
                                       _C.PAIRWISE) == pairwise
        extra = [_C.cuda_workspace_bytes(m, length, code, exact, True, tuning(), a) - pairwise
                 for a in (_C.BUCKETED, _C.AUTO)]
        assert extra[0] == extra[1] > 0
        np_ = min(length, 4096 if dtype != "FLOAT64" else 2048, max(64, -(-length // 8)))
        acc = 8 if dtype == "FLOAT64" else 4
        per_row = (np_ * (12 + (2 if exact else 1) * acc) + 16 * (np_ + 1)
                   + (2 * np_ + 2) * 40 + 4 * length + 28)
        assert per_row * m <= extra[0] <= per_row * m + 17 * 256
        if m * length > 10 ** 6:   # the benchmark shapes: less than the pairwise workspace again
            assert extra[0] < pairwise
