"""docs/DESIGN.md §9: bad input raises an error naming the argument, before any kernel runs."""
import pytest
import torch

import rspose_kernels as rk
from rspose_kernels import dispatch

S = torch.randn(3, 8)
Y = torch.rand(3, 8)


@pytest.fixture
def no_kernel(monkeypatch):
    """Any backend call during the check phase fails the test."""
    def boom(*a, **k):
        raise AssertionError("a kernel ran before the argument check")
    monkeypatch.setattr(dispatch, "backend_fn", lambda name: boom)
    monkeypatch.setattr(rk.ops, "backend_fn", lambda name: boom)


CASES = [
    # (call kwargs, exception, text the message must contain)
    (dict(scores=[1.0, 2.0]), TypeError, "scores"),
    (dict(scores=S.long()), ValueError, "scores: expected a floating dtype"),
    (dict(scores=torch.tensor(1.0), labels=torch.tensor(1.0)), ValueError, "scores"),
    (dict(scores=torch.zeros(3, 0), labels=torch.zeros(3, 0)), ValueError, "scores"),
    (dict(labels=Y[:, :5]), ValueError, "labels: expected the shape of scores"),
    (dict(labels=Y.int()), ValueError, "labels: expected a floating dtype"),
    (dict(labels=Y.to("meta")), ValueError, "labels: expected a tensor on cpu"),
    (dict(labels=Y + 1), ValueError, "labels: expected values in [0, 1]"),
    (dict(labels=Y - 0.5), ValueError, "labels: expected values in [0, 1]"),
    (dict(labels=torch.full((3, 8), float("nan"))), ValueError, "labels"),
    (dict(delta=-0.1), ValueError, "delta"),
    (dict(delta=float("inf")), ValueError, "delta"),
    (dict(delta=0.0, grad_mode="exact"), ValueError, "delta"),
    (dict(pos_thr=float("nan")), ValueError, "pos_thr"),
    (dict(pos_thr=-0.1), ValueError, "pos_thr: expected a number >= 0"),
    (dict(reduction="avg"), ValueError, "reduction: expected one of"),
    (dict(grad_mode="rs"), ValueError, "grad_mode: expected one of"),
    (dict(backend="tpu"), ValueError, "backend: expected one of"),
    (dict(backend="cuda"), RuntimeError, "backend: 'cuda' is not available for cpu"),
    (dict(weight=torch.ones(4)), ValueError, "weight: expected a shape broadcastable"),
    (dict(weight=-torch.ones(3)), ValueError, "weight: expected values >= 0"),
    (dict(weight=torch.ones(3, device="meta")), ValueError, "weight: expected a tensor on cpu"),
    (dict(weight=[1.0, 1.0, 1.0]), TypeError, "weight"),
    # bool is an int to Python, never a number to these arguments
    (dict(delta=True), ValueError, "delta: expected a finite number, got True"),
    (dict(pos_thr=False), ValueError, "pos_thr: expected a finite number, got False"),
    # the loss has no gradient with respect to its labels: asking for one is an error
    (dict(labels=Y.clone().requires_grad_(True)), ValueError,
     "labels: expected a tensor that does not require grad"),
]


@pytest.mark.parametrize("kw,exc,text", CASES, ids=[c[2][:30] for c in CASES])
def test_rank_sort_loss_errors(no_kernel, kw, exc, text):
    kw = dict(kw)
    scores = kw.pop("scores", S)
    labels = kw.pop("labels", Y)
    with pytest.raises(exc) as info:
        rk.rank_sort_loss(scores, labels, **kw)
    assert text in str(info.value)


def test_backend_error_lists_what_is_available(no_kernel):
    with pytest.raises(RuntimeError, match=r"available: \[.*'torch'.*\]"):
        rk.rank_sort_loss(S, Y, backend="cuda")


def test_spatial_errors(no_kernel):
    with pytest.raises(ValueError, match="heatmaps: expected at least 3"):
        rk.spatial_rs_loss(torch.randn(4, 8), torch.rand(4, 8))
    with pytest.raises(ValueError, match="targets: expected the shape of heatmaps"):
        rk.spatial_rs_loss(torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"target_weight: expected shape \[2, 3\]"):
        rk.spatial_rs_loss(torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.ones(2, 3, 2))


def test_simcc_errors(no_kernel):
    x, y = torch.randn(2, 3, 10), torch.randn(2, 3, 12)
    with pytest.raises(ValueError, match="pred: expected a pair"):
        rk.simcc_rs_loss(x, (torch.rand(2, 3, 10), torch.rand(2, 3, 12)))
    with pytest.raises(ValueError, match=r"target\[y\]: expected the shape of pred\[y\]"):
        rk.simcc_rs_loss((x, y), (torch.rand(2, 3, 10), torch.rand(2, 3, 11)))
    with pytest.raises(ValueError, match=r"target\[y\]: expected a tensor on cpu"):
        rk.simcc_rs_loss((x, y), (torch.rand(2, 3, 10), torch.rand(2, 3, 12, device="meta")))
    y4 = torch.randn(2, 4, 12)
    with pytest.raises(ValueError, match=r"pred\[y\]: expected the leading dims of pred\[x\]"):
        rk.simcc_rs_loss((x, y4), (torch.rand(2, 3, 10), torch.rand(2, 4, 12)))


def test_labels_requiring_grad_are_fine_without_grad_mode():
    labels = Y.clone().requires_grad_(True)
    with torch.no_grad():
        out = rk.rank_sort_loss(S, labels, backend="torch")
    torch.testing.assert_close(out.loss, rk.rank_sort_loss(S, Y, backend="torch").loss)


def test_wrappers_name_their_own_label_argument(no_kernel):
    heat, target = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4).requires_grad_(True)
    with pytest.raises(ValueError, match="targets: expected a tensor that does not require"):
        rk.spatial_rs_loss(heat, target)
    x, y = torch.randn(2, 3, 10), torch.randn(2, 3, 12)
    gx, gy = torch.rand(2, 3, 10), torch.rand(2, 3, 12).requires_grad_(True)
    with pytest.raises(ValueError, match=r"target\[y\]: expected a tensor that does not"):
        rk.simcc_rs_loss((x, y), (gx, gy))
    with pytest.raises(ValueError, match="targets: expected a tensor that does not require"):
        rk.RSPoseLoss()(heat, target)


def test_non_tensor_target_weight(no_kernel):
    with pytest.raises(TypeError, match="target_weight: expected a torch.Tensor or None"):
        rk.spatial_rs_loss(torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4), [[1.0] * 3] * 2)
    with pytest.raises(TypeError, match="target_weight: expected a torch.Tensor or None"):
        rk.simcc_rs_loss((torch.randn(2, 3, 10), torch.randn(2, 3, 12)),
                         (torch.rand(2, 3, 10), torch.rand(2, 3, 12)), 1.0)


def test_backward_needs_the_gradient_computed_in_the_forward():
    # The op computes the gradient in the forward only when asked (need_grad); a backward
    # through a forward that skipped it must say so, not return zeros or garbage.
    scores = S.clone().requires_grad_(True)
    loss_rows = rk.ops.rank_sort_rows(scores, Y, 0.5, 0.0, False, False, "torch")[0]
    with pytest.raises(RuntimeError, match="need_grad=True"):
        loss_rows.sum().backward()


def test_available_backends_are_exactly_those_that_run():
    listed = rk.available_backends("cpu")
    assert listed == rk.available_backends(torch.device("cpu")) == rk.available_backends(S)
    assert "cuda" not in listed     # the cuda backend never takes CPU tensors
    want = rk.rank_sort_loss(S, Y, backend="torch").loss
    for name in dispatch.BACKEND_NAMES[1:]:
        if name in listed:          # listed: it runs here and agrees with the reference
            torch.testing.assert_close(rk.rank_sort_loss(S, Y, backend=name).loss, want,
                                       rtol=1e-4, atol=1e-6)
        else:                       # not listed: refused by name, before any kernel
            with pytest.raises(RuntimeError, match=f"backend: '{name}' is not available"):
                rk.rank_sort_loss(S, Y, backend=name)
