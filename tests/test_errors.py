"""SPEC §9: bad input raises an error naming the argument, before any kernel runs."""
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
    y4 = torch.randn(2, 4, 12)
    with pytest.raises(ValueError, match=r"pred\[y\]: expected the leading dims of pred\[x\]"):
        rk.simcc_rs_loss((x, y4), (torch.rand(2, 3, 10), torch.rand(2, 4, 12)))


def test_available_backends_names_torch_everywhere():
    assert "torch" in rk.available_backends("cpu")
    assert "torch" in rk.available_backends(torch.device("cpu"))
