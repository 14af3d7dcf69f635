"""What is specific to the triton backend (tiles, ``Blocks`` overrides, strided programs,
launches, pruning, availability); the contract every backend keeps is tested by
test_backend_contract.py.

On CPU the kernels run under the Triton interpreter (TRITON_INTERPRET=1, set by conftest.py);
cases stay small because it is slow. Some tests shrink the tiles so that several tiles per
row, several positive blocks and strided programs run on small inputs. With a GPU, run
``TRITON_INTERPRET=0 pytest tests/test_triton.py`` to test the compiled kernels on "cuda".
"""
import dataclasses
import math

import pytest
import torch

from rspose_kernels.testing import (
    SHAPES,
    heatmap_case,
    random_rows,
    shape_case,
)
from tests.reference.parity import (
    against_reference,
    assert_parity,
    device_params,
    require,
)

tk = require("rspose_kernels.backends.triton_backend", "RSPOSE_REQUIRE_TRITON",
             "triton is not installed")
DEVICES = device_params(tk.is_available("cpu"), "CPU needs the interpreter (TRITON_INTERPRET=1)",
                        not tk._INTERPRETED, "compiled kernels need TRITON_INTERPRET unset or 0")

# Tiles far smaller than the rows below: several tiles per row (ragged last ones), several
# positive blocks per row and fewer programs than blocks (the strided loops).
TINY = tk.Blocks(compact=16, a_pos=4, a_neg=8, a_pp=4, b_neg=8, b_neg_pos=4, b_pos=4,
                 b_pos_pos=4, programs=2)

def both(scores, labels, delta, exact, **kw):
    return against_reference(tk.rank_sort_rows, scores, labels, delta, exact, **kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("delta,exact", [(0.0, False), (0.5, False), (0.25, True), (1.0, True)])
def test_tiny_tiles_match_torch(delta, exact, device):
    # 45 = 5 compaction tiles + 13, ties for x = 0 and equal labels, an empty and a full row.
    scores, labels = random_rows(5, 45, seed=4, ties=True, pos_frac=0.4, empty_rows=1,
                                 all_pos_rows=1, device=device)
    assert_parity(*both(scores, labels, delta, exact, blocks=TINY), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_bitwise_deterministic(device):
    scores, labels = random_rows(3, 26, seed=7, ties=True, pos_frac=0.4, device=device)
    for exact in (False, True):
        first = tk.rank_sort_rows(scores, labels, 0.5, 0.0, exact, True, blocks=TINY)
        again = tk.rank_sort_rows(scores, labels, 0.5, 0.0, exact, True, blocks=TINY)
        # Which program handles a block never changes its arithmetic.
        other_grid = tk.rank_sort_rows(scores, labels, 0.5, 0.0, exact, True,
                                       blocks=dataclasses.replace(TINY, programs=5))
        for a, b, c in zip(first, again, other_grid):
            assert torch.equal(a, b) and torch.equal(a, c)


class _LaunchSpy:
    """Stands in for a @triton.jit kernel: records each launch's grid and keywords."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.launches.append((grid, kw))
            return self.kernel[grid](*args, **kw)
        return launch


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("exact", [False, True])
def test_without_gradient_launches_no_gradient_work(exact, device, monkeypatch):
    scores, labels = random_rows(4, 30, seed=8, pos_frac=0.3, device=device)
    spies = {name: _LaunchSpy(getattr(tk, name))
             for name in ("_compact_kernel", "_pass_a_kernel", "_pass_b_kernel")}
    for name, spy in spies.items():
        monkeypatch.setattr(tk, name, spy)
    got, want = both(scores, labels, 0.5, exact, need_grad=False)
    assert_parity(got, want, torch.float32, need_grad=False)
    (compact,), (pass_a,), (pass_b,) = (spy.launches for spy in spies.values())
    assert compact[1]["WRITE_GRAD"] is False
    assert pass_a[1]["NEED_GRAD"] is False and pass_a[1]["EXACT"] is False
    # Pass B runs only its one finishing program per row (rank and sort), no gradient sweep.
    assert pass_b[1]["NEED_GRAD"] is False and pass_b[0] == (4, 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("delta,exact", [(0.5, False), (0.25, True), (0.0, False)])
def test_pass_a_tile_chosen_per_row(delta, exact, device):
    # Rows of 2 to 47 positives among 48: pass A takes blocks of 8 and of 4 positives
    # (against tiles of 4 and 8 negatives) on different rows of one launch, and pass B sums
    # as many partials as each row's tile made.
    cfg = dataclasses.replace(TINY, a_pos=8)
    parts = [random_rows(3, 48, seed=20 + i, pos_frac=f, ties=True, device=device)
             for i, f in enumerate((0.04, 0.2, 0.35, 0.6, 0.95))]
    scores = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    npos, nkeep = tk.row_stats(scores, labels, delta, 0.0)
    block, _ = tk.pass_a_tile(npos.long().cpu(), nkeep.long().cpu(), cfg)
    assert set(block.tolist()) == {4, 8}
    assert tk.min_pass_a_block(cfg) == 4
    got, want = both(scores, labels, delta, exact, blocks=cfg)
    assert_parity(got, want, torch.float32)
    again = tk.rank_sort_rows(scores, labels, delta, 0.0, exact, True,
                              blocks=dataclasses.replace(cfg, programs=3))
    for a, b in zip(got, again):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_identity_gradient_rows_sum_to_zero(device):
    scores, labels = random_rows(5, 40, seed=9, device=device)
    grad = tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, True, blocks=TINY)[3]
    torch.testing.assert_close(grad.sum(1), torch.zeros(5, device=device), rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("exact", [False, True])
def test_pruning_is_exact(exact, device):
    # Trained-regime heatmaps: nearly every negative lies δ below the lowest positive.
    heatmaps, targets, _ = heatmap_case(2, 3, 10, 9, 1.0, regime="trained", seed=10,
                                        device=device, invisible=0.2, pos_thr=0.0)
    scores, labels = heatmaps.flatten(2).flatten(0, 1), targets.flatten(2).flatten(0, 1)
    npos, nkeep = tk.row_stats(scores, labels, 0.5, 0.0)
    negatives = scores.shape[1] - npos
    assert (nkeep <= negatives).all() and nkeep.sum() * 10 < negatives.sum()
    # A few negatives lifted to just above / just below the pruning bound.
    low = torch.where(labels > 0, scores, torch.inf).amin(1)
    near = torch.tensor([-0.49, -0.51, -0.5], device=device)
    scores[:, :3] = torch.where(labels[:, :3] > 0, scores[:, :3], low[:, None] + near)
    assert_parity(*both(scores, labels, 0.5, exact), torch.float32)
    if not exact:
        assert_parity(*both(scores[:2], labels[:2], 0.5, exact, blocks=TINY), torch.float32)


def test_exact_needs_positive_delta():
    scores, labels = random_rows(2, 5)
    with pytest.raises(ValueError, match="delta"):
        tk.rank_sort_rows(scores, labels, 0.0, 0.0, True, True)


def test_availability():
    import os

    import rspose_kernels as rk
    assert tk.is_available("cuda") == torch.cuda.is_available()
    assert tk.is_available("cpu") == tk._INTERPRETED
    if os.environ.get("TRITON_INTERPRET") == "1":     # conftest.py's default
        assert tk._INTERPRETED
    assert ("triton" in rk.available_backends("cpu")) == tk.is_available("cpu")


# ---------------------------------------------------------------------------- GPU only


cuda_only = pytest.mark.skipif(not torch.cuda.is_available() or tk._INTERPRETED,
                               reason="needs a GPU and compiled kernels")


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("regime", ["init", "trained"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_benchmark_shapes_match_torch(shape, regime):
    # A slice of each benchmark shape (docs/DESIGN.md §8) through the default tiles.
    pred, target, _ = shape_case(shape, regime=regime, seed=13, device="cuda")
    if shape == "simcc":
        rows = [(p.flatten(0, 1)[:96], t.flatten(0, 1)[:96], math.exp(-4.5))
                for p, t in zip(pred, target)]
    else:
        rows = [(pred.flatten(2).flatten(0, 1)[:34], target.flatten(2).flatten(0, 1)[:34], 0.0)]
    for scores, labels, thr in rows:
        for exact in (False, True):
            assert_parity(*both(scores, labels, 0.5, exact, pos_thr=thr), torch.float32)


@cuda_only
@pytest.mark.cuda
def test_no_host_sync_and_graph_capture():
    scores, labels = random_rows(64, 3072, seed=14, pos_frac=0.05, device="cuda")
    want = tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, True)   # compiles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, True)
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(out, want):
        assert torch.equal(a, b)


@cuda_only
@pytest.mark.cuda
def test_auto_picks_a_kernel_backend_on_cuda():
    from rspose_kernels.dispatch import resolve_backend
    assert resolve_backend("auto", "cuda") == "triton"
