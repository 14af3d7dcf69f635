"""rspose_kernels.decode: keypoints and confidences from logit (and MSE) heads.

A quadratic logit map is the log of a Gaussian, so the DARK step on exp(logit − max) has an
exact answer: the Gaussian's centre (the blur by another Gaussian keeps the centre; only the
zero padding near a border moves it). Off-grid centres, every dtype, batches, flat and
border maps, the free level of logits, and the argument errors.
"""
import math

import pytest
import torch

import rspose_kernels as rk
from rspose_kernels.decode import decode_heatmaps, decode_simcc, gaussian_kernel

H, W = 32, 24


def _grid(dtype=torch.float32):
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype),
                            indexing="ij")
    return xs, ys


def _quadratic_logits(centres, sigma, level, dtype=torch.float32):
    """[N, H, W] logits −d²/(2σ²) + level: the log of a Gaussian at each centre."""
    xs, ys = _grid(dtype)
    c = torch.tensor(centres, dtype=dtype)
    d2 = (xs - c[:, 0, None, None]) ** 2 + (ys - c[:, 1, None, None]) ** 2
    return -d2 / (2 * sigma ** 2) + level


# Off-grid centres at least the blur's radius (5 taps for σ 2) plus one from every border:
# there the zero padding of the blur does not reach the peak.
CENTRES = [(10.3, 20.7), (6.5, 7.2), (16.81, 6.49), (12.0, 16.0), (8.02, 24.95)]
# The method's own error on these: the blur is a truncated, sampled Gaussian, so the
# blurred log-map is quadratic only approximately (1.8e-4 px measured at σ 1, 4e-5 at σ 2).
METHOD_TOL = 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_recovers_off_grid_centres_of_logit_heads(dtype, sigma):
    logits = _quadratic_logits(CENTRES, sigma, level=-3.0, dtype=dtype)
    xy, score = decode_heatmaps(logits, sigma=sigma)
    assert xy.dtype == dtype and xy.shape == (len(CENTRES), 2)
    torch.testing.assert_close(xy, torch.tensor(CENTRES, dtype=dtype), rtol=0, atol=METHOD_TOL)
    # float32 rounds in the blur and the log, nowhere near the method's error
    xy64, _ = decode_heatmaps(logits.double(), sigma=sigma)
    torch.testing.assert_close(xy.double(), xy64, rtol=0, atol=1e-4)
    peak = logits.flatten(1).amax(-1)
    torch.testing.assert_close(score, torch.nn.functional.softplus(peak))
    for name, fn in (("sigmoid", torch.sigmoid), ("max", lambda t: t)):
        _, other = decode_heatmaps(logits, sigma=sigma, score=name)
        torch.testing.assert_close(other, fn(peak))
    # the integer arg-max alone is off by up to half a pixel: the step is what helps
    raw, _ = decode_heatmaps(logits, sigma=sigma, refine=False)
    assert (raw - torch.tensor(CENTRES, dtype=dtype)).abs().max() > 0.4


def test_probability_heads_are_refined_on_the_heatmap_itself():
    gauss = torch.exp(_quadratic_logits(CENTRES, 2.0, level=0.0))
    xy, score = decode_heatmaps(gauss, sigma=2.0, logits=False)
    torch.testing.assert_close(xy, torch.tensor(CENTRES), rtol=0, atol=METHOD_TOL)
    torch.testing.assert_close(score, gauss.flatten(1).amax(-1))


def test_the_level_of_logits_moves_no_keypoint():
    logits = _quadratic_logits(CENTRES, 2.0, level=-40.0)   # every maximum far below 0
    xy, score = decode_heatmaps(logits, sigma=2.0)
    for shift in (-10.0, 0.0, 3.0, 60.0):
        xy2, score2 = decode_heatmaps(logits + shift, sigma=2.0)
        torch.testing.assert_close(xy2, xy, rtol=0, atol=1e-4)
        assert ((score2 > score) if shift > 0 else (score2 <= score)).all()
    assert (xy >= 0).all()   # never mmpose's −1 for a maximum ≤ 0


def test_batches_keep_their_leading_dims_and_match_one_by_one():
    g = torch.Generator().manual_seed(70)
    maps = torch.randn(2, 3, H, W, generator=g) + _quadratic_logits(CENTRES[:3], 2.0, 0.0)
    xy, score = decode_heatmaps(maps, sigma=2.0)
    assert xy.shape == (2, 3, 2) and score.shape == (2, 3)
    for b in range(2):
        for k in range(3):
            one, s = decode_heatmaps(maps[b, k], sigma=2.0)
            # (the convolution's summation order may depend on the batch: low bits only)
            torch.testing.assert_close(one, xy[b, k], rtol=0, atol=1e-5)
            assert torch.equal(s, score[b, k])


def test_flat_border_and_empty_maps():
    flat = torch.zeros(1, H, W)
    xy, score = decode_heatmaps(flat, sigma=2.0)
    assert torch.equal(xy, torch.zeros(1, 2))
    assert score.item() == pytest.approx(math.log(2))   # softplus(0)
    # a peak on the border: the step needs both neighbours, so the arg-max stays
    edge = _quadratic_logits([(0.0, 13.4), (23.0, 31.0)], 2.0, 0.0)
    xy, _ = decode_heatmaps(edge, sigma=2.0)
    assert xy[0, 0] == 0 and xy[1].tolist() == [23.0, 31.0]
    assert torch.isfinite(xy).all()
    xy, score = decode_heatmaps(torch.zeros(0, 17, H, W), sigma=2.0)
    assert xy.shape == (0, 17, 2) and score.shape == (0, 17)


def test_a_step_is_never_more_than_a_pixel():
    # A ridge (singular Hessian along x) and a saddle: no maximum for the quadratic model.
    xs, ys = _grid()
    ridge = -(ys - 10.4) ** 2 + 1e-3 * xs
    saddle = -(ys - 10.0) ** 2 + 0.5 * (xs - 11.0) ** 2 * (xs < 11) - 0.001 * (xs - 11.0) ** 2
    xy, _ = decode_heatmaps(torch.stack([ridge, saddle]), sigma=1.0)
    raw, _ = decode_heatmaps(torch.stack([ridge, saddle]), sigma=1.0, refine=False)
    assert ((xy - raw).abs() <= 1).all() and torch.isfinite(xy).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simcc_recovers_off_grid_centres(dtype):
    sx, sy = 4.9, 5.66   # RTMPose's label σ in bins
    bx, by = torch.arange(384, dtype=dtype), torch.arange(512, dtype=dtype)
    cx = torch.tensor([[100.37, 200.5], [57.9, 310.01]], dtype=dtype)   # [B, K]
    cy = torch.tensor([[250.2, 33.3], [400.75, 128.0]], dtype=dtype)
    x = -(bx - cx[..., None]) ** 2 / (2 * sx ** 2) - 1.0
    y = -(by - cy[..., None]) ** 2 / (2 * sy ** 2) - 2.0
    xy, score = decode_simcc(x, y, sigma=(sx, sy))
    assert xy.shape == (2, 2, 2) and score.shape == (2, 2)
    torch.testing.assert_close(xy, torch.stack([cx, cy], -1), rtol=0, atol=METHOD_TOL)
    # the weaker axis scores the keypoint (mmpose's get_simcc_maximum takes the minimum)
    torch.testing.assert_close(score, torch.nn.functional.softplus(
        torch.minimum(x.amax(-1), y.amax(-1))))
    # level-free, as the heatmap decoder
    xy2, _ = decode_simcc(x - 30, y + 7, sigma=(sx, sy))
    torch.testing.assert_close(xy2, xy, rtol=0, atol=1e-4)


def test_gaussian_kernel():
    k = gaussian_kernel(2.0)
    assert k.numel() == 11 and math.isclose(k.sum().item(), 1.0, rel_tol=1e-6)
    assert torch.equal(k, k.flip(0)) and k.argmax().item() == 5
    assert gaussian_kernel(1.0).numel() == 5


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="sigma"):
        decode_heatmaps(torch.zeros(2, H, W), sigma=0.0)
    with pytest.raises(ValueError, match="heatmaps"):
        decode_heatmaps(torch.zeros(W), sigma=2.0)
    with pytest.raises(ValueError, match="heatmaps"):
        decode_heatmaps(torch.zeros(2, H, W, dtype=torch.int64), sigma=2.0)
    with pytest.raises(TypeError, match="heatmaps"):
        decode_heatmaps([[0.0]], sigma=2.0)
    with pytest.raises(ValueError, match="simcc_y"):
        decode_simcc(torch.zeros(2, 3, 10), torch.zeros(2, 4, 10), sigma=2.0)
    with pytest.raises(ValueError, match="sigma"):
        decode_simcc(torch.zeros(2, 10), torch.zeros(2, 12), sigma=(2.0, -1.0))
    with pytest.raises(ValueError, match="score"):
        decode_heatmaps(torch.zeros(2, H, W), score="probability")
    with pytest.raises(ValueError, match="sigma: expected one number or a pair"):
        decode_simcc(torch.zeros(2, 10), torch.zeros(2, 12), sigma=(2.0, 1.0, 3.0))


def test_exported_at_the_top_level():
    assert rk.decode.decode_heatmaps is decode_heatmaps
    assert rk.decode.decode_simcc is decode_simcc
