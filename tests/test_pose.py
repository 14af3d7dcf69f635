"""Instance-Sort and RSPoseLoss (docs/DESIGN.md §3) against the slow loops of
tests/reference/pose.py, written from the definition."""
import math

import pytest
import torch

import rspose_kernels as rk
from rspose_kernels.pose import RSPoseLoss, instance_sort_loss, simcc_instance_sort_loss  # noqa: F401 (public names)
from rspose_kernels.testing import heatmap_case, simcc_case
from tests.reference.parity import assert_close
from tests.reference.pose import (
    COCO,
    ref_instance_sort,
    ref_rspose_heatmap,
    ref_rspose_simcc,
    ref_simcc_instance_sort,
)

BACKENDS = rk.available_backends("cpu")

# ----------------------------------------------------------------------------- helpers

def grad_of(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward()
    return out.detach(), [leaf.grad for leaf in leaves]


# ----------------------------------------------------------------------------- Instance-Sort

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [17, 5])
@pytest.mark.parametrize("delta", [0.0, 0.5, 1.0])
def test_instance_sort_matches_loop(backend, k, delta):
    heat, target, weight = heatmap_case(3, k, 9, 7, 1.0, seed=30 + k, invisible=0.2)
    loss, (g,) = grad_of(lambda x: instance_sort_loss(x, target, weight, delta=delta,
                                                      backend=backend), heat)
    ref_loss, ref_g = ref_instance_sort(heat, target, weight, delta=delta)
    assert ref_loss > 0   # a case where the sort error is not trivially 0
    assert_close(loss, ref_loss)
    assert_close(g, ref_g)


def test_instance_sort_float64_and_half():
    heat, target, weight = heatmap_case(2, 17, 8, 6, 1.0, seed=31, dtype=torch.float64)
    loss, (g,) = grad_of(lambda x: instance_sort_loss(x, target, weight, backend="torch"), heat)
    ref_loss, ref_g = ref_instance_sort(heat, target, weight)
    assert loss.dtype == torch.float64
    assert_close(loss, ref_loss, torch.float64)
    assert_close(g, ref_g, torch.float64)
    for dtype in (torch.float16, torch.bfloat16):
        h = heat.to(dtype)
        loss, (g,) = grad_of(lambda x: instance_sort_loss(x, target, weight), h)
        ref_loss, ref_g = ref_instance_sort(h, target, weight)
        assert loss.dtype == torch.float32 and g.dtype == dtype
        assert_close(loss, ref_loss)           # summed in float32, never rounded to half
        assert_close(g, ref_g, dtype)          # rounded once to half (testing.TOLERANCES)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_non_items_get_exact_zero_gradient(backend, delta):
    # Invisible keypoints ride along as −inf negatives: their gradient must be 0, not NaN.
    heat, target, weight = heatmap_case(4, 5, 6, 5, 1.0, seed=32, invisible=0.4)
    assert (weight == 0).any() and (weight > 0).sum() > 1
    loss, (g,) = grad_of(lambda x: instance_sort_loss(x, target, weight, delta=delta,
                                                      backend=backend), heat)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    assert torch.equal(g[weight == 0], torch.zeros_like(g[weight == 0]))
    # Only the arg-max pixel of an item can move, and the gradient sums to 0 (identity rule).
    assert ((g != 0).flatten(2).sum(-1) <= 1).all()
    assert abs(float(g.sum())) < 1e-6


def test_row_of_items_has_no_rank_part():
    # The design: the core's loss on the padded row equals its sort part exactly.
    heat, target, weight = heatmap_case(3, 4, 5, 5, 1.0, seed=33, invisible=0.3)
    conf = heat.flatten(2).amax(-1)
    row = torch.where(weight > 0, conf, torch.tensor(-math.inf)).reshape(1, -1)
    q = torch.where(weight > 0, torch.rand(3, 4) + 0.01, torch.zeros(3, 4)).clamp(max=1)
    for backend in BACKENDS:
        out = rk.rank_sort_loss(row, q.reshape(1, -1), backend=backend)
        assert out.rank.item() == 0 and out.loss.item() == out.sort.item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_invisible_batch_is_zero_and_connected(backend):
    heat, target, _ = heatmap_case(2, 3, 5, 4, 1.0, seed=34)
    weight = torch.zeros(2, 3)
    h = heat.clone().requires_grad_(True)
    loss = instance_sort_loss(h, target, weight, backend=backend)
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert torch.equal(h.grad, torch.zeros_like(h))
    # The whole loss too: nothing valid anywhere.
    h.grad = None
    total = RSPoseLoss(backend=backend)(h, target, weight)
    total.backward()
    assert total.item() == 0 and torch.equal(h.grad, torch.zeros_like(h))


def test_single_item_and_empty_batch():
    heat, target, weight = heatmap_case(1, 3, 5, 4, 1.0, seed=35, invisible=0.0)
    weight = torch.tensor([[0.0, 1.0, 0.0]])
    loss, (g,) = grad_of(lambda x: instance_sort_loss(x, target, weight), heat)
    assert loss.item() == 0 and torch.equal(g, torch.zeros_like(g))
    h = torch.zeros(0, 17, 4, 4, requires_grad=True)
    loss = instance_sort_loss(h, torch.zeros(0, 17, 4, 4))
    loss.backward()
    assert loss.item() == 0 and h.grad.shape == h.shape


def test_ties_in_the_heatmap_maximum_pick_the_first_pixel():
    b, k, h, w = 1, 4, 5, 6
    target = torch.zeros(b, k, h, w)
    heat = torch.randn(b, k, h, w, generator=torch.Generator().manual_seed(36)) - 5
    centres = [(1, 1), (3, 4), (0, 5), (4, 0)]
    for kk, (y, x) in enumerate(centres):
        target[0, kk, y, x] = 1.0
    # Keypoint 0: its maximum 2.0 is tied at (1, 4) and (3, 1); the first in row-major
    # order, (1, 4), is the prediction (d² = 9) and takes the whole gradient.
    heat[0, 0, 1, 4] = heat[0, 0, 3, 1] = 2.0
    heat[0, 1, 3, 4], heat[0, 2, 2, 2], heat[0, 3, 4, 3] = 1.0, 3.0, 2.5
    small_area = 100.0   # qualities between 0.03 and 1, none clamped
    loss, (g,) = grad_of(lambda x: instance_sort_loss(x, target, area=small_area), heat)
    ref_loss, ref_g = ref_instance_sort(heat, target, area=small_area)
    assert_close(loss, ref_loss)
    assert_close(g, ref_g)
    assert g[0, 0, 1, 4] != 0 and g[0, 0, 3, 1] == 0
    # Had the other tied pixel been taken, d² = 4 and the loss would differ.
    moved = heat.clone()
    moved[0, 0, 1, 4] = 1.9
    assert abs(instance_sort_loss(moved, target, area=small_area).item() - loss.item()) > 1e-4


def test_sigmas_default_by_k_and_explicit():
    for k, sig in ((17, COCO), (5, [0.07] * 5), (1, [0.07])):
        heat, target, weight = heatmap_case(3, k, 8, 7, 1.0, seed=37 + k)
        default = instance_sort_loss(heat, target, weight)
        explicit = instance_sort_loss(heat, target, weight, sigmas=sig)
        as_tensor = instance_sort_loss(heat, target, weight, sigmas=torch.tensor(sig))
        assert default.item() == explicit.item() == as_tensor.item()
    heat, target, weight = heatmap_case(3, 17, 8, 7, 1.0, seed=54)
    coco = instance_sort_loss(heat, target, weight)
    flat = instance_sort_loss(heat, target, weight, sigmas=[0.07] * 17)
    assert abs(coco.item() - flat.item()) > 1e-6
    assert_close(coco, ref_instance_sort(heat, target, weight)[0])
    assert_close(flat, ref_instance_sort(heat, target, weight, sigmas=[0.07] * 17)[0])


def test_area_number_and_per_instance():
    heat, target, weight = heatmap_case(3, 6, 8, 7, 1.0, seed=38)
    for area in (5.0, torch.tensor([3.0, 40.0, 9.0])):
        loss, (g,) = grad_of(lambda x: instance_sort_loss(x, target, weight, area=area), heat)
        ref_loss, ref_g = ref_instance_sort(heat, target, weight, area=area)
        assert_close(loss, ref_loss)
        assert_close(g, ref_g)


@pytest.mark.parametrize("backend", BACKENDS)
def test_instance_sort_positive_threshold(backend):
    # Targets with peaks in (0.1, 1]: a keypoint is an item only when its peak exceeds τ.
    heat, target, weight = heatmap_case(3, 5, 9, 7, 1.0, seed=56, invisible=0.0)
    peaks = torch.rand(3, 5, generator=torch.Generator().manual_seed(56)) * 0.9 + 0.1
    target = target * peaks[..., None, None]
    thr = 0.5
    assert 3 < int((peaks > thr).sum()) < 12
    loss, (g,) = grad_of(lambda x: instance_sort_loss(x, target, weight, pos_thr=thr,
                                                      backend=backend), heat)
    ref_loss, ref_g = ref_instance_sort(heat, target, weight, pos_thr=thr)
    assert ref_loss > 0
    assert_close(loss, ref_loss)
    assert_close(g, ref_g)
    # The threshold changes the item set: the loss with τ = 0 differs.
    assert abs(ref_instance_sort(heat, target, weight, pos_thr=0.0)[0] - ref_loss) > 1e-3


def test_target_weights_select_items_without_scaling():
    heat, target, weight = heatmap_case(3, 5, 7, 6, 1.0, seed=39, invisible=0.2)
    graded = weight * torch.rand(3, 5, generator=torch.Generator().manual_seed(1)) * 3
    a = instance_sort_loss(heat, target, weight)
    b = instance_sort_loss(heat, target, graded)
    c = instance_sort_loss(heat, target, graded[..., None, None])   # mmpose's [B, K, 1, 1]
    assert a.item() == b.item() == c.item()
    # Without weights every keypoint with a target counts; invisible ones have none.
    assert instance_sort_loss(heat, target).item() == a.item()


def test_nan_propagates():
    heat, target, weight = heatmap_case(2, 3, 5, 4, 1.0, seed=40, invisible=0.0)
    heat[1, 2, 0, 0] = float("nan")
    assert torch.isnan(instance_sort_loss(heat, target, weight))
    assert torch.isnan(RSPoseLoss()(heat, target, weight))


# ----------------------------------------------------------------------------- RSPoseLoss

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mask_kind", [None, "per_instance", "per_keypoint"])
def test_rspose_heatmap_matches_loop(backend, mask_kind):
    b, k, h, w = 3, 5, 8, 7
    heat, target, weight = heatmap_case(b, k, h, w, 1.0, seed=41, invisible=0.2)
    weight = weight * torch.tensor([1.0, 0.5, 2.0, 1.0, 1.0])   # graded weights scale rows
    g = torch.Generator().manual_seed(42)
    mask = None
    if mask_kind == "per_instance":
        mask = (torch.rand(b, 1, h, w, generator=g) > 0.3).float()
    elif mask_kind == "per_keypoint":
        mask = torch.rand(b, k, h, w, generator=g) > 0.3
        mask[0, 1] = False                       # a whole heatmap masked: drops out
        mask[1, 0].view(-1)[heat[1, 0].argmax()] = False   # its maximum is masked
    module = RSPoseLoss(instance_weight=0.7, loss_weight=2.0, backend=backend)
    loss, (gh,) = grad_of(lambda x: module(x, target, weight, mask), heat)
    ref_loss, ref_g = ref_rspose_heatmap(heat, target, weight, mask, instance_weight=0.7,
                                         loss_weight=2.0)
    assert_close(loss, ref_loss, msg=backend)
    assert_close(gh, ref_g, msg=backend)
    if mask is not None:
        masked = ~(mask != 0).expand(b, k, h, w)
        assert torch.equal(gh[masked], torch.zeros_like(gh[masked]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_rspose_pos_thr_sigmas_and_area(backend):
    # pos_thr reaches both parts (Gaussian values 0.61, 0.37, 0.14 around each joint: some
    # positives drop out), sigmas and a per-instance area the Instance-Sort part.
    heat, target, weight = heatmap_case(3, 5, 8, 7, 1.0, seed=57, invisible=0.2)
    options = dict(pos_thr=0.3, sigmas=[0.05, 0.1, 0.07, 0.2, 0.03],
                   area=torch.tensor([20.0, 35.0, 50.0]))
    module = RSPoseLoss(backend=backend, **options)
    loss, (g,) = grad_of(lambda x: module(x, target, weight), heat)
    ref_loss, ref_g = ref_rspose_heatmap(heat, target, weight, None, **options)
    assert_close(loss, ref_loss, msg=backend)
    assert_close(g, ref_g, msg=backend)
    # Each option is used: leaving any one out changes the reference loss.
    for name in options:
        rest = {k: v for k, v in options.items() if k != name}
        assert abs(ref_rspose_heatmap(heat, target, weight, None, **rest)[0] - ref_loss) > 1e-4


def test_rspose_use_target_weight_false_and_defaults():
    heat, target, weight = heatmap_case(2, 4, 6, 5, 1.0, seed=43, invisible=0.3)
    graded = weight * 3.0
    off = RSPoseLoss(use_target_weight=False)
    # Ignored weights: every row with a target counts with weight 1.
    assert off(heat, target, graded).item() == off(heat, target).item()
    ref_loss, _ = ref_rspose_heatmap(heat, target, None, None)
    assert_close(off(heat, target, graded), ref_loss)
    # target_weights=None with use_target_weight=True means all ones.
    on = RSPoseLoss()
    assert on(heat, target).item() == off(heat, target).item()
    # instance_weight=0 is the Spatial-RS loss alone.
    spatial = RSPoseLoss(instance_weight=0.0, loss_weight=3.0)(heat, target, weight)
    assert_close(spatial, 3 * rk.spatial_rs_loss(heat, target, weight).loss)
    total = RSPoseLoss(instance_weight=0.5)(heat, target, weight)
    assert_close(total, rk.spatial_rs_loss(heat, target, weight).loss
                 + 0.5 * instance_sort_loss(heat, target, weight))


@pytest.mark.parametrize("backend", BACKENDS)
def test_rspose_exact_grad_mode_only_changes_the_spatial_part(backend):
    heat, target, weight = heatmap_case(2, 4, 6, 5, 1.0, seed=44)
    mask = torch.rand(2, 1, 6, 5, generator=torch.Generator().manual_seed(44)) > 0.3
    masked = torch.where(mask, heat, torch.tensor(-math.inf))
    loss = RSPoseLoss(grad_mode="exact", backend=backend)
    _, (g_exact,) = grad_of(lambda x: loss(x, target, weight, mask), heat)
    _, (g_sp,) = grad_of(lambda x: rk.spatial_rs_loss(
        x, target * mask, weight, grad_mode="exact", backend="torch").loss, masked)
    _, (g_in,) = grad_of(lambda x: instance_sort_loss(x, target * mask, weight,
                                                      backend="torch"), masked)
    assert torch.isfinite(g_exact).all()
    assert_close(g_exact, g_sp + g_in)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rspose_simcc_matches_loop(backend):
    (px, py), (gx, gy), weight = simcc_case(3, 5, 24, 20, 2.0, seed=45, invisible=0.2)
    gx, gy = gx * 0.1, gy * 0.1   # mmpose may normalise; the loss rescales to peak 1
    module = RSPoseLoss(mode="simcc", instance_weight=0.5, backend=backend)
    loss, (g_x, g_y) = grad_of(lambda a, b: module((a, b), (gx, gy), weight), px, py)
    ref_loss, ref_gx, ref_gy = ref_rspose_simcc(px, py, gx, gy, weight, instance_weight=0.5)
    assert_close(loss, ref_loss, msg=backend)
    assert_close(g_x, ref_gx, msg=backend)
    assert_close(g_y, ref_gy, msg=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rspose_simcc_exact_without_target_weight(backend):
    (px, py), (gx, gy), weight = simcc_case(3, 5, 24, 20, 2.0, seed=58, invisible=0.2)
    graded = weight * torch.rand(3, 5, generator=torch.Generator().manual_seed(58)) * 3
    module = RSPoseLoss(mode="simcc", grad_mode="exact", use_target_weight=False,
                        instance_weight=0.5, backend=backend)
    loss, (g_x, g_y) = grad_of(lambda a, b: module((a, b), (gx, gy), graded), px, py)
    ref_loss, ref_gx, ref_gy = ref_rspose_simcc(px, py, gx, gy, None, instance_weight=0.5,
                                                grad_mode="exact")
    assert_close(loss, ref_loss, msg=backend)
    assert_close(g_x, ref_gx, msg=backend)
    assert_close(g_y, ref_gy, msg=backend)
    # Sharp: the identity gradient is different here.
    _, id_gx, _ = ref_rspose_simcc(px, py, gx, gy, None, instance_weight=0.5)
    assert (id_gx - ref_gx).abs().max() > 1e-3


def test_simcc_confidence_is_min_of_axis_maxima():
    (px, py), (gx, gy), weight = simcc_case(2, 3, 12, 10, 1.5, seed=46, invisible=0.0)
    py = py.clone()
    py[0, 0] = px[0, 0].max()          # a tie between the axes: x takes the gradient
    loss, (g_x, g_y) = grad_of(lambda a, b: simcc_instance_sort_loss((a, b), (gx, gy), weight),
                               px, py)
    ref_loss, ref_gx, ref_gy = ref_simcc_instance_sort(px, py, gx, gy, weight)
    assert ref_loss > 0
    assert_close(loss, ref_loss)
    assert_close(g_x, ref_gx)
    assert_close(g_y, ref_gy)
    assert g_y[0, 0].abs().sum() == 0


def test_simcc_all_invisible():
    (px, py), (gx, gy), _ = simcc_case(2, 3, 12, 10, 1.5, seed=47)
    weight = torch.zeros(2, 3)
    loss, (g_x, g_y) = grad_of(lambda a, b: RSPoseLoss(mode="simcc")((a, b), (gx, gy), weight),
                               px, py)
    assert loss.item() == 0
    assert torch.equal(g_x, torch.zeros_like(g_x)) and torch.equal(g_y, torch.zeros_like(g_y))


# ----------------------------------------------------------------------------- errors

H, T, W = heatmap_case(2, 3, 5, 4, 1.0, seed=48)

INSTANCE_ERRORS = [
    (dict(heatmaps=H[0]), ValueError, "heatmaps: expected"),
    (dict(heatmaps=H.long()), ValueError, "heatmaps: expected a floating dtype"),
    (dict(targets=T[:, :2]), ValueError, "targets: expected the shape of heatmaps"),
    (dict(targets=T + 1), ValueError, r"targets: expected values in \[0, 1\]"),
    (dict(heatmaps=torch.zeros(2, 3, 0, 4), targets=torch.zeros(2, 3, 0, 4)), ValueError,
     "heatmaps: expected H, W >= 1"),
    (dict(target_weight=W[:1]), ValueError, "target_weight: expected shape"),
    (dict(target_weight=-W), ValueError, "target_weight: expected values >= 0"),
    (dict(sigmas=[0.07] * 2), ValueError, "sigmas: expected a sequence of 3"),
    (dict(sigmas=[0.07, 0.0, 0.07]), ValueError, "sigmas: expected a number > 0"),
    (dict(sigmas=torch.ones(4)), ValueError, "sigmas: expected 3 values"),
    (dict(area=0.0), ValueError, "area: expected a number > 0"),
    (dict(area=torch.ones(3)), ValueError, "area: expected a number or a tensor of shape"),
    (dict(area=-torch.ones(2)), ValueError, "area: expected finite values > 0"),
    (dict(delta=-1.0), ValueError, "delta: expected a number >= 0"),
    (dict(backend="gpu"), ValueError, "backend: expected one of"),
]


@pytest.mark.parametrize("kw,exc,text", INSTANCE_ERRORS)
def test_instance_sort_errors(kw, exc, text):
    args = dict(heatmaps=H, targets=T, target_weight=W)
    args.update(kw)
    with pytest.raises(exc, match=text):
        instance_sort_loss(args.pop("heatmaps"), args.pop("targets"), args.pop("target_weight"),
                           **args)


@pytest.fixture
def no_kernel(monkeypatch):
    """Any backend call fails the test: the checks must come first."""
    def boom(*a, **k):
        raise AssertionError("a kernel ran before the argument check")
    monkeypatch.setattr(rk.ops, "backend_fn", lambda name: boom)


(PX, PY), (GX, GY), SW = simcc_case(2, 3, 8, 6, 1.0, seed=59)
META = torch.device("meta")

SIMCC_INSTANCE_ERRORS = [
    (dict(pred=PX), ValueError, "pred: expected a pair"),
    (dict(target=[GX]), ValueError, "target: expected a pair"),
    (dict(pred=(PX.long(), PY)), ValueError, r"pred\[x\]: expected a floating dtype"),
    (dict(pred=(PX[0], PY)), ValueError, r"pred\[x\]: expected at least 3"),
    (dict(pred=(PX, PY[..., None])), ValueError, r"pred\[y\]: expected shape \[B, K, bins\]"),
    (dict(target=(GX[..., :5], GY)), ValueError, r"target\[x\]: expected the shape of pred"),
    (dict(target=(GX, GY.to(META))), ValueError, r"target\[y\]: expected a tensor on cpu"),
    (dict(pred=(torch.zeros(2, 3, 0), PY), target=(torch.zeros(2, 3, 0), GY)), ValueError,
     r"pred\[x\]: expected at least 1 bin"),
    (dict(pred=(PX, PY[:, :2]), target=(GX, GY[:, :2])), ValueError,
     r"pred\[y\]: expected the \[B, K\] of pred\[x\]"),
    (dict(target=(-GX, GY)), ValueError, r"target\[x\]: expected finite values >= 0"),
    (dict(target=(GX, GY * float("nan"))), ValueError, r"target\[y\]: expected finite"),
    (dict(target_weight=SW[:1]), ValueError, "target_weight: expected shape"),
    (dict(target_weight=SW.tolist()), TypeError, "target_weight: expected a torch.Tensor"),
    (dict(target_weight=SW.to(META)), ValueError, "target_weight: expected a tensor on cpu"),
    (dict(target_weight=-SW), ValueError, "target_weight: expected values >= 0"),
    (dict(sigmas=[0.07] * 2), ValueError, "sigmas: expected a sequence of 3"),
    (dict(sigmas=[True] * 3), ValueError, "sigmas: expected a finite number"),
    (dict(area=torch.ones(2, device=META)), ValueError, "area: expected a tensor on cpu"),
    (dict(area=0.0), ValueError, "area: expected a number > 0"),
    (dict(delta=-1.0), ValueError, "delta: expected a number >= 0"),
    (dict(delta=True), ValueError, "delta: expected a finite number"),
    (dict(backend="gpu"), ValueError, "backend: expected one of"),
]


@pytest.mark.parametrize("kw,exc,text", SIMCC_INSTANCE_ERRORS,
                         ids=[f"{i}-{c[2][:24]}" for i, c in enumerate(SIMCC_INSTANCE_ERRORS)])
def test_simcc_instance_sort_errors(no_kernel, kw, exc, text):
    args = dict(pred=(PX, PY), target=(GX, GY), target_weight=SW)
    args.update(kw)
    with pytest.raises(exc, match=text):
        simcc_instance_sort_loss(args.pop("pred"), args.pop("target"), args.pop("target_weight"),
                                 **args)


POSE_INPUT_ERRORS = [
    # (call, exception, message): devices, non-tensors and bools the pose functions refuse
    (lambda: instance_sort_loss(H, T.to(META), W), ValueError,
     "targets: expected a tensor on cpu"),
    (lambda: instance_sort_loss(H, T, W.to(META)), ValueError,
     "target_weight: expected a tensor on cpu"),
    (lambda: instance_sort_loss(H, T, W, area=torch.ones(2, device=META)), ValueError,
     "area: expected a tensor on cpu"),
    (lambda: instance_sort_loss(H, T, W.tolist()), TypeError,
     "target_weight: expected a torch.Tensor"),
    (lambda: instance_sort_loss(H, T, W, area=True), ValueError, "area: expected a finite"),
    (lambda: instance_sort_loss(H, T, W, pos_thr=True), ValueError,
     "pos_thr: expected a finite"),
    (lambda: RSPoseLoss()(H, T.to(META), W), ValueError, "target: expected a tensor on cpu"),
    (lambda: RSPoseLoss()(H, T, W, torch.ones(2, 1, 5, 4, device=META)), ValueError,
     "mask: expected a tensor on cpu"),
    (lambda: RSPoseLoss()(H, T, W, [[1.0]]), TypeError, "mask: expected a torch.Tensor"),
    (lambda: RSPoseLoss()(H, T, W.tolist()), TypeError, "target_weight: expected a torch"),
    (lambda: RSPoseLoss(mode="simcc")((PX, PY), (GX, GY.to(META)), SW), ValueError,
     r"target\[y\]: expected a tensor on cpu"),
    (lambda: RSPoseLoss(instance_weight=True), ValueError, "instance_weight: expected a finite"),
    (lambda: RSPoseLoss(loss_weight=False), ValueError, "loss_weight: expected a finite"),
    (lambda: RSPoseLoss(delta=True), ValueError, "delta: expected a finite"),
    (lambda: RSPoseLoss(area=True), ValueError, "area: expected a finite"),
    (lambda: RSPoseLoss(sigmas=[0.07, True]), ValueError, "sigmas: expected a finite"),
]


@pytest.mark.parametrize("call,exc,text", POSE_INPUT_ERRORS,
                         ids=[f"{i}-{c[2][:24]}" for i, c in enumerate(POSE_INPUT_ERRORS)])
def test_pose_input_errors(no_kernel, call, exc, text):
    with pytest.raises(exc, match=text):
        call()


def test_rspose_errors():
    for kw, text in [(dict(mode="regression"), "mode: expected one of"),
                     (dict(instance_weight=-1.0), "instance_weight: expected a number >= 0"),
                     (dict(loss_weight=float("nan")), "loss_weight: expected a finite number"),
                     (dict(use_target_weight=1), "use_target_weight: expected True or False"),
                     (dict(backend="fast"), "backend: expected one of"),
                     (dict(grad_mode="exact", delta=0.0), "delta: grad_mode='exact'"),
                     (dict(area=-2.0), "area: expected a number > 0"),
                     (dict(sigmas=0.07), "sigmas: expected one number per keypoint"),
                     (dict(sigmas=[0.07, -1.0]), "sigmas: expected a number > 0")]:
        with pytest.raises(ValueError, match=text):
            RSPoseLoss(**kw)
    with pytest.raises(TypeError, match="reduction"):
        RSPoseLoss(reduction="sum")
    loss = RSPoseLoss()
    with pytest.raises(ValueError, match="mask: expected shape"):
        loss(H, T, W, torch.ones(2, 2, 5, 4))
    with pytest.raises(ValueError, match="output: expected"):
        loss(H[0], T[0])
    with pytest.raises(ValueError, match="target: expected the shape of output"):
        loss(H, T[:, :1])
    (px, py), (gx, gy), w = simcc_case(2, 3, 8, 6, 1.0, seed=49)
    simcc = RSPoseLoss(mode="simcc")
    with pytest.raises(ValueError, match="mask: not supported"):
        simcc((px, py), (gx, gy), w, torch.ones(2, 3, 8))
    with pytest.raises(ValueError, match="pred: expected a pair"):
        simcc(px, (gx, gy), w)


# ----------------------------------------------------------------------------- torch.compile

def _compile_cases():
    heat, target, weight = heatmap_case(2, 3, 6, 5, 1.0, seed=50, invisible=0.3)
    heat[0, 1].view(-1)[[3, 17]] = heat[0, 1].max() + 1   # a tie in the maximum
    mask = torch.rand(2, 1, 6, 5, generator=torch.Generator().manual_seed(51)) > 0.2
    simcc = simcc_case(2, 3, 14, 12, 1.5, seed=52)
    return (heat, target, weight, mask), simcc


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_every_backend(backend):
    (heat, target, weight, mask), ((px, py), (gx, gy), sw) = _compile_cases()
    heat_loss = RSPoseLoss(backend=backend, loss_weight=1.5)
    simcc_loss = RSPoseLoss(mode="simcc", backend=backend)
    for fn, args in (
            (lambda x: heat_loss(x, target, weight, mask), (heat,)),
            (lambda a, b: simcc_loss((a, b), (gx, gy), sw), (px, py))):
        eager, g_eager = grad_of(fn, *args)
        torch._dynamo.reset()
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        comp, g_comp = grad_of(compiled, *args)
        torch.testing.assert_close(comp, eager, rtol=1e-6, atol=1e-7, msg=backend)
        for a, b in zip(g_comp, g_eager):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=backend)


def test_compile_dynamic_batch_no_recompile():
    from torch._dynamo.testing import CompileCounterWithBackend
    for mode in ("heatmap", "simcc"):
        loss_fn = RSPoseLoss(mode=mode)
        counter = CompileCounterWithBackend("aot_eager")
        torch._dynamo.reset()
        compiled = torch.compile(lambda o, t, w: loss_fn(o, t, w), dynamic=True,
                                 fullgraph=True, backend=counter)
        frames = []
        for b in (2, 5):
            if mode == "heatmap":
                o, t, w = heatmap_case(b, 3, 8, 6, 1.0, seed=55 + b)
            else:
                o, t, w = simcc_case(b, 3, 16, 12, 1.5, seed=55 + b)
            torch.testing.assert_close(compiled(o, t, w), loss_fn(o, t, w))
            frames.append(counter.frame_count)
        assert frames[1] == frames[0], mode


def test_compile_inductor_training_step():
    # One real inductor graph: head + RSPoseLoss (with a tie and a mask) + backward. The
    # gradient on the input shows which tied pixel inductor's argmax picked.
    (heat, target, weight, mask), _ = _compile_cases()
    head = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        head.bias.zero_()
    loss_fn = RSPoseLoss()

    def step(x):
        return loss_fn(head(x), target, weight, mask)

    def run(fn):
        x = heat.detach().clone().requires_grad_(True)
        head.weight.grad = None
        loss = fn(x)
        loss.backward()
        return loss.detach(), x.grad, head.weight.grad.clone()

    torch._dynamo.reset()
    compiled = run(torch.compile(step, fullgraph=True))
    eager = run(step)
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-6)


def test_tensor_options_move_with_the_module():
    loss = rk.RSPoseLoss(sigmas=torch.full((3,), 0.05), area=torch.tensor(40.0))
    assert {n for n, _ in loss.named_buffers()} == {"sigmas", "area"}
    moved = loss.to(torch.float64)
    assert moved.sigmas.dtype == torch.float64 and moved.area.dtype == torch.float64
    assert not loss.state_dict()   # options, not learned state
