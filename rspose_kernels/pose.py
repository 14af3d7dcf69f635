"""The pose-level losses of RSPose: Instance-Sort and RSPoseLoss (docs/DESIGN.md §3).

Instance-Sort is the core of docs/DESIGN.md §2 on ONE row holding every (b, k) of the batch:
items are positives (label = OKS quality), everything else is turned into a harmless
negative with label 0 and score −inf. Against −inf, H(x_ij) = 0 for every positive
(x = −inf, clamp → 0; δ = 0: x < 0 → 0; H' = 0), so F_i = 0, the ranking error and its
gradient vanish and the core's ``loss`` is exactly the sort part. Keeping all B·K slots in
the row (no boolean indexing) keeps the whole loss free of host syncs and of data-dependent
shapes.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from . import checks, defaults, distributed
from .backends import accumulation_dtype
from .dispatch import ALGORITHM_NAMES, BACKEND_NAMES, resolve_algorithm, resolve_backend
from .losses import (
    DEFAULT_DELTA,
    HEATMAP_POS_THR,
    SIMCC_POS_THR,
    keypoint_row_weight,
    rank_sort_loss,
    simcc_rs_loss,
    spatial_rs_loss,
)

# COCO keypoint sigmas (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles), the
# per-keypoint falloff of COCO's OKS. Used when K = 17; other K use DEFAULT_SIGMA.
COCO_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
               0.107, 0.107, 0.087, 0.087, 0.089, 0.089)
DEFAULT_SIGMA = 0.07
# mmpose crops the box padded by 1.25 on each side: the instance covers (H/1.25)·(W/1.25).
BOX_PADDING = 1.25
MIN_QUALITY = 1e-6   # every item stays a positive of the core (label > 0)
MODES = ("heatmap", "simcc")


_CONSTANTS: dict = {}


def _constant(values: tuple, device: torch.device) -> Tensor:
    """A float64 vector of Python numbers on ``device``, copied there once.

    A host list copied to a GPU synchronises the stream, so eager calls reuse one copy per
    device; under torch.compile the tensor is a graph constant (made once, at compile time).
    """
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=torch.float64, device=device)
    key = (values, device)
    if key not in _CONSTANTS:
        host = torch.tensor(values, dtype=torch.float64)
        if device.type == "cuda":   # pinned + non_blocking: an asynchronous copy, no sync
            host = host.pin_memory()
        _CONSTANTS[key] = host.to(device, non_blocking=True)
    return _CONSTANTS[key]


def _sigmas(sigmas, k: int, ref: Tensor) -> Tensor:
    if sigmas is None:
        values = COCO_SIGMAS if k == len(COCO_SIGMAS) else (DEFAULT_SIGMA,) * k
        return _constant(values, ref.device)
    if isinstance(sigmas, Tensor):
        if sigmas.shape != (k,) or sigmas.is_complex():
            raise ValueError(f"sigmas: expected {k} values (one per keypoint), "
                             f"got a tensor of shape {tuple(sigmas.shape)}")
        values = sigmas.detach().to(device=ref.device, dtype=torch.float64)
        checks.values(torch.isfinite(values).all() & (values > 0).all(),
                      f"sigmas: expected {k} finite values > 0")
        return values
    if not isinstance(sigmas, Sequence) or len(sigmas) != k:
        raise ValueError(f"sigmas: expected a sequence of {k} values (one per keypoint), "
                         f"got {sigmas!r}")
    for v in sigmas:
        checks.number("sigmas", v, minimum=0, strict=True)
    return _constant(tuple(float(v) for v in sigmas), ref.device)


def _area(area, b: int, default: float, ref: Tensor, ref_name: str) -> Tensor:
    """Per-instance areas [B] in the heatmap's pixels (SimCC: bins)."""
    if area is None:
        return torch.full((b,), default, dtype=torch.float64, device=ref.device)
    if isinstance(area, Tensor):
        if area.dim() > 1 or area.numel() not in (1, b) or area.is_complex():
            raise ValueError(f"area: expected a number or a tensor of shape [{b}] "
                             f"(one area per instance), got shape {tuple(area.shape)}")
        checks.same_device("area", area, ref_name, ref)
        values = area.detach().to(torch.float64).reshape(-1).expand(b)
        checks.values(torch.isfinite(values).all() & (values > 0).all(),
                      "area: expected finite values > 0")
        return values
    checks.number("area", area, minimum=0, strict=True)
    return torch.full((b,), float(area), dtype=torch.float64, device=ref.device)


def _max_with_index(scores: Tensor):
    """Max of the last dim with its gradient to ONE arg-max (the first on ties)."""
    index = scores.argmax(-1, keepdim=True)
    return scores.gather(-1, index).squeeze(-1), index.squeeze(-1)


def _check_backend_and_algorithm(backend, algorithm, ref: Tensor) -> None:
    """Both names, and the algorithm against the backend that will run, before any work (and
    before the collectives of a process group)."""
    resolve_algorithm(algorithm, resolve_backend(backend, ref.device, algorithm))


def _sort_items(confidence: Tensor, sq_dist: Tensor, items: Tensor, sigmas: Tensor,
                area: Tensor, delta: float, backend: str, algorithm: str = "auto",
                process_group=None) -> Tensor:
    """Sort part of the core over the items of [B, K]: confidence vs OKS quality."""
    acc = accumulation_dtype(confidence.dtype)
    with torch.no_grad():
        kappa = 2 * sigmas                                           # [K]
        oks = torch.exp(-sq_dist / (2 * area[:, None] * kappa[None, :] ** 2))
        quality = oks.clamp(min=MIN_QUALITY, max=1.0)
        labels = torch.where(items, quality, torch.zeros_like(quality)).to(acc).reshape(1, -1)
    if confidence.numel() == 0 and process_group is None:   # B·K = 0: 0, still in the graph
        return confidence.sum().to(acc) * 0
    floor = torch.full_like(confidence, -math.inf)
    row = torch.where(items, confidence, floor).reshape(1, -1)
    if process_group is not None:   # every rank's items, this one's live (docs/DESIGN.md §10)
        row, labels = distributed.gather_items(row, labels, process_group)
        return distributed.world_scaled(rank_sort_loss(
            row, labels, delta=delta, pos_thr=0.0, reduction="mean", backend=backend,
            algorithm=algorithm).loss, process_group)
    # One row: "mean" is the row's value, or 0 (connected) when it has no item.
    return rank_sort_loss(row, labels, delta=delta, pos_thr=0.0, reduction="mean",
                          backend=backend, algorithm=algorithm).loss


def _target_weight(target_weight, b, k, ref, ref_name):
    tw = keypoint_row_weight(target_weight, b, k, "target_weight")
    if tw is None:
        return None
    checks.same_device("target_weight", tw, ref_name, ref)
    checks.values((tw >= 0).all(), "target_weight: expected values >= 0 (no NaN)")
    return tw


def instance_sort_loss(heatmaps: Tensor, targets: Tensor, target_weight: Tensor | None = None,
                       *, delta: float = DEFAULT_DELTA, sigmas=None, area=None,
                       backend: str = "auto", pos_thr: float = HEATMAP_POS_THR,
                       algorithm: str = "auto", process_group=None) -> Tensor:
    """Instance-Sort loss over the keypoints of a batch of heatmaps (docs/DESIGN.md §3).

    Ranks every keypoint of the batch by its confidence against its localisation quality:
    the sorting error of the core over the items, with the identity-update gradient.

    Args:
        heatmaps: logits ``[B, K, H, W]``, H, W ≥ 1.
        targets: same shape and device, in [0, 1].
        target_weight: ``[B, K]`` (or ``[B, K, 1, ...]``), ≥ 0; None: every keypoint. Weights
            only select items (weight > 0), they do not scale them.
        delta: half-width δ ≥ 0 of the smoothed step.
        sigmas: K per-keypoint OKS sigmas > 0 (a sequence or a tensor); None: COCO's when
            K = 17, else 0.07 each.
        area: the instance area in heatmap pixels, a number or a ``[B]`` tensor, > 0;
            None: H·W / 1.25² (the box inside mmpose's padded crop; ours).
        backend: as :func:`rank_sort_loss`.
        pos_thr: τ ≥ 0; a keypoint is an item when its target peak is above it. Default
            ``rspose_kernels.HEATMAP_POS_THR``.
        algorithm: as :func:`rank_sort_loss`.
        process_group: None ranks this process's items. A torch.distributed group (e.g.
            ``torch.distributed.group.WORLD``) ranks the items of all its ranks' batches
            (docs/DESIGN.md §10): the per-item (confidence, quality) are all-gathered (B·K
            numbers per rank, never heatmaps; B may differ per rank). Every rank of the
            group must call it (a collective), also with no item or B = 0. Under
            torch.compile the gather is one graph break (rspose_kernels/distributed.py says
            why).

    Returns:
        A scalar: the mean sorting error over the items; 0, still in the graph, when there
        is no item. An item's score is its heatmap's maximum (gradient to the arg-max pixel,
        the first in row-major order on ties, as ``torch.argmax``); its label is the OKS
        quality ``exp(−d² / (2·area·(2σ_k)²))`` of that arg-max against the target's
        arg-max, without gradient and clamped to ≥ 1e-6. With a process group the value is
        the loss of the concatenated batch, the same on every rank, and its gradient goes
        to this rank's heatmaps only, scaled by the world size W, so that after DDP
        averages the ranks' gradients every parameter has the gradient one process gets
        from this loss on the concatenated batch.

    Raises:
        TypeError: heatmaps, targets or target_weight is not a tensor (or None), or
            process_group is not a ProcessGroup.
        ValueError: not ``[B, K, H, W]`` float tensors of one shape and device, H or W of 0,
            delta or pos_thr negative, an unknown backend or algorithm, a target_weight,
            sigmas or area of the wrong shape or value; targets outside [0, 1] on CPU (on
            CUDA and under torch.compile the value checks are device-side asserts).
        RuntimeError: the backend is not available here, or a process group without an
            initialised torch.distributed.
    """
    checks.tensor("heatmaps", heatmaps, min_dim=4)
    checks.tensor("targets", targets)
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps: expected shape [B, K, H, W], got {tuple(heatmaps.shape)}")
    checks.same_shape("targets", targets, "heatmaps", heatmaps)
    checks.same_device("targets", targets, "heatmaps", heatmaps)
    b, k, h, w = heatmaps.shape
    if h < 1 or w < 1:
        raise ValueError(f"heatmaps: expected H, W >= 1, got shape {tuple(heatmaps.shape)}")
    checks.number("delta", delta, minimum=0)
    checks.number("pos_thr", pos_thr, minimum=0)
    distributed.check_group(process_group)
    _check_backend_and_algorithm(backend, algorithm, heatmaps)
    tw = _target_weight(target_weight, b, k, heatmaps, "heatmaps")
    sig = _sigmas(sigmas, k, heatmaps)
    areas = _area(area, b, h * w / BOX_PADDING ** 2, heatmaps, "heatmaps")
    checks.labels_in_unit_range("targets", targets)

    confidence, pred_idx = _max_with_index(heatmaps.flatten(2))
    with torch.no_grad():
        target_peak, target_idx = targets.flatten(2).max(-1)
        dy = torch.div(pred_idx, w, rounding_mode="floor") - torch.div(
            target_idx, w, rounding_mode="floor")
        dx = pred_idx % w - target_idx % w
        sq_dist = (dx * dx + dy * dy).to(torch.float64)
        items = target_peak > pos_thr
        if tw is not None:
            items = items & (tw > 0)
    return _sort_items(confidence, sq_dist, items, sig, areas, delta, backend, algorithm,
                       process_group)


def simcc_instance_sort_loss(pred, target, target_weight: Tensor | None = None, *,
                             delta: float = DEFAULT_DELTA, sigmas=None, area=None,
                             backend: str = "auto", algorithm: str = "auto",
                             process_group=None) -> Tensor:
    """Instance-Sort for SimCC heads: confidence of each keypoint against its OKS.

    Args:
        pred: ``(x [B, K, Wx], y [B, K, Hy])`` logits, at least 1 bin per axis.
        target: ``(gx, gy)`` labels ≥ 0, shaped like ``pred``.
        target_weight: ``[B, K]`` (or ``[B, K, 1, ...]``), ≥ 0; None: every keypoint.
        delta, sigmas, backend, algorithm: as :func:`instance_sort_loss`.
        area: the instance area in bins², a number or a ``[B]`` tensor; None: Wx·Hy / 1.25².
        process_group: as :func:`instance_sort_loss` (the global batch's items, gradient
            scaled by the world size).

    Returns:
        A scalar, the mean sorting error over the items: the keypoints of weight > 0 whose
        two targets are both non-zero. The confidence of keypoint (b, k) is
        ``min(max_x, max_y)`` of the logits, the keypoint score mmpose's SimCC decoder
        reports (so training sorts what evaluation ranks); its gradient goes to the arg-max
        bin of the smaller axis (x on a tie; the first bin on ties within an axis). The
        quality is the OKS of the (arg-max x, arg-max y) bins against the targets'
        arg-max, in bins.

    Raises:
        TypeError: an element of pred or target, or target_weight, is not a tensor, or
            process_group is not a ProcessGroup.
        ValueError: pred or target is not a pair, an axis not ``[B, K, bins]`` with a bin, a
            target of another shape or device, x and y with different ``[B, K]``, and the
            argument errors of :func:`instance_sort_loss`; targets negative or not finite
            on CPU (device-side asserts on CUDA and under torch.compile).
        RuntimeError: as :func:`instance_sort_loss`.
    """
    for name, pair in (("pred", pred), ("target", target)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{name}: expected a pair (x, y) of tensors, "
                             f"got {type(pair).__name__}")
    for axis, p, t in zip("xy", pred, target):
        checks.tensor(f"pred[{axis}]", p, min_dim=3)
        checks.tensor(f"target[{axis}]", t)
        if p.dim() != 3:
            raise ValueError(f"pred[{axis}]: expected shape [B, K, bins], got {tuple(p.shape)}")
        checks.same_shape(f"target[{axis}]", t, f"pred[{axis}]", p)
        checks.same_device(f"target[{axis}]", t, "pred[x]", pred[0])
        if p.shape[-1] < 1:
            raise ValueError(f"pred[{axis}]: expected at least 1 bin, got {tuple(p.shape)}")
    px, py = pred
    if px.shape[:2] != py.shape[:2]:
        raise ValueError(f"pred[y]: expected the [B, K] of pred[x] {tuple(px.shape[:2])}, "
                         f"got {tuple(py.shape[:2])}")
    checks.number("delta", delta, minimum=0)
    distributed.check_group(process_group)
    _check_backend_and_algorithm(backend, algorithm, px)
    b, k, wx = px.shape
    hy = py.shape[-1]
    tw = _target_weight(target_weight, b, k, px, "pred[x]")
    sig = _sigmas(sigmas, k, px)
    areas = _area(area, b, wx * hy / BOX_PADDING ** 2, px, "pred[x]")
    for axis, t in zip("xy", target):
        checks.values(((t >= 0) & torch.isfinite(t)).all(),
                      f"target[{axis}]: expected finite values >= 0")

    conf_x, idx_x = _max_with_index(px)
    conf_y, idx_y = _max_with_index(py)
    confidence = torch.where(conf_x <= conf_y, conf_x, conf_y)
    with torch.no_grad():
        peak_x, tgt_x = target[0].max(-1)
        peak_y, tgt_y = target[1].max(-1)
        dx = idx_x - tgt_x
        dy = idx_y - tgt_y
        sq_dist = (dx * dx + dy * dy).to(torch.float64)
        items = (peak_x > 0) & (peak_y > 0)
        if tw is not None:
            items = items & (tw > 0)
    return _sort_items(confidence, sq_dist, items, sig, areas, delta, backend, algorithm,
                       process_group)


def _valid_pixels(mask, output: Tensor) -> Tensor:
    """mmpose's pixel mask ([B, K, H, W] or [B, 1, H, W]) as a boolean broadcastable to output."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask: expected a torch.Tensor or None, got {type(mask).__name__}")
    b, k, h, w = output.shape
    if mask.dim() != 4 or mask.shape[0] != b or mask.shape[1] not in (1, k) \
            or mask.shape[2:] != (h, w):
        raise ValueError(f"mask: expected shape [{b}, {k}, {h}, {w}] or [{b}, 1, {h}, {w}], "
                         f"got {tuple(mask.shape)}")
    checks.same_device("mask", mask, "output", output)
    return mask if mask.dtype == torch.bool else mask > 0


class RSPoseLoss(nn.Module):
    """RSPose's loss: (Spatial-RS + ``instance_weight`` × Instance-Sort) × ``loss_weight``.

    A drop-in for mmpose's heatmap / SimCC losses (``KeypointMSELoss``, ``KLDiscretLoss``),
    with their ``forward(output, target, target_weights=None, mask=None)``; registered in
    mmpose by ``rspose_kernels.integrations.mmpose``.

    Args:
        mode: "heatmap" (``[B, K, H, W]`` heatmaps, :func:`spatial_rs_loss` and
            :func:`instance_sort_loss`) or "simcc" ((x, y) vectors, :func:`simcc_rs_loss`
            and :func:`simcc_instance_sort_loss`).
        instance_weight: λ ≥ 0, the weight of Instance-Sort (0 skips it). Default
            ``rspose_kernels.INSTANCE_WEIGHT``.
        use_target_weight: weight each row by its keypoint's target weight (rows of weight 0
            drop out of the mean) and take as Instance-Sort items only keypoints of
            weight > 0; False: every keypoint with a non-zero target counts, with weight 1.
        loss_weight: a finite factor on the whole loss.
        sync: under torch.distributed (DDP; config key ``sync=True``), Instance-Sort ranks
            the items of the global batch and the spatial mean divides by the global valid
            weight, both over the default group (docs/DESIGN.md §10). The returned value is
            then the loss of the concatenated batch (the same on every rank) and its gradient
            is scaled by the world size, so after DDP's averaging every parameter has the
            single-process gradient on the concatenated batch. A no-op when
            torch.distributed is not initialised or has one process.
        **kw: ``delta``, ``pos_thr``, ``grad_mode`` (the spatial part; Instance-Sort always
            uses the identity update), ``sigmas``, ``area`` (Instance-Sort; a tensor becomes
            a non-persistent buffer, so ``module.to(device)`` moves it), ``backend`` and
            ``algorithm`` (both). ``pos_thr`` defaults to the heatmap or SimCC τ of
            ``rspose_kernels.defaults``.

    Raises:
        TypeError: an unknown keyword argument.
        ValueError: an unknown mode, grad_mode, backend or algorithm; a negative or
            non-finite instance_weight, delta or pos_thr; a non-finite loss_weight; a
            use_target_weight or sync that is not a bool; grad_mode="exact" with delta = 0;
            sigmas or area that are not positive numbers.
    """

    _OPTIONS = ("delta", "pos_thr", "grad_mode", "sigmas", "area", "backend", "algorithm")

    def __init__(self, mode: str = "heatmap", instance_weight: float = defaults.INSTANCE_WEIGHT,
                 use_target_weight: bool = True, loss_weight: float = 1.0, sync: bool = False,
                 **kw):
        super().__init__()
        checks.choice("mode", mode, MODES)
        checks.number("instance_weight", instance_weight, minimum=0)
        checks.number("loss_weight", loss_weight)
        if not isinstance(use_target_weight, bool):
            raise ValueError(f"use_target_weight: expected True or False, "
                             f"got {use_target_weight!r}")
        if not isinstance(sync, bool):
            raise ValueError(f"sync: expected True or False, got {sync!r}")
        self.sync = sync
        unknown = sorted(set(kw) - set(self._OPTIONS))
        if unknown:
            raise TypeError(f"RSPoseLoss: unexpected keyword argument(s) {unknown}; "
                            f"expected some of {list(self._OPTIONS)}")
        self.delta = kw.get("delta", DEFAULT_DELTA)
        checks.number("delta", self.delta, minimum=0)
        self.pos_thr = kw.get("pos_thr", SIMCC_POS_THR if mode == "simcc" else HEATMAP_POS_THR)
        checks.number("pos_thr", self.pos_thr, minimum=0)
        self.grad_mode = kw.get("grad_mode", "identity")
        checks.choice("grad_mode", self.grad_mode, checks.GRAD_MODES)
        if self.grad_mode == "exact" and self.delta == 0:
            raise ValueError("delta: grad_mode='exact' needs delta > 0")
        self.backend = kw.get("backend", "auto")
        checks.choice("backend", self.backend, BACKEND_NAMES)
        self.algorithm = kw.get("algorithm", "auto")
        checks.choice("algorithm", self.algorithm, ALGORITHM_NAMES)
        sigmas = kw.get("sigmas")
        if sigmas is not None and not isinstance(sigmas, Tensor):
            # configs give lists; the length is checked against K in forward
            if isinstance(sigmas, str) or not isinstance(sigmas, Sequence):
                raise ValueError(f"sigmas: expected one number per keypoint, got {sigmas!r}")
            for v in sigmas:
                checks.number("sigmas", v, minimum=0, strict=True)
            sigmas = tuple(float(v) for v in sigmas)
        area = kw.get("area")
        if area is not None and not isinstance(area, Tensor):
            checks.number("area", area, minimum=0, strict=True)
        for name, value in (("sigmas", sigmas), ("area", area)):
            if isinstance(value, Tensor):   # a buffer, so that module.to(device) moves it
                self.register_buffer(name, value.detach(), persistent=False)
            else:
                setattr(self, name, value)
        self.mode = mode
        self.instance_weight = float(instance_weight)
        self.use_target_weight = use_target_weight
        self.loss_weight = float(loss_weight)

    def extra_repr(self) -> str:
        return (f"mode={self.mode!r}, instance_weight={self.instance_weight}, "
                f"use_target_weight={self.use_target_weight}, loss_weight={self.loss_weight}, "
                f"delta={self.delta}, backend={self.backend!r}, sync={self.sync}")

    def forward(self, output, target, target_weights: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        """The loss of one batch.

        Args:
            output: mode "heatmap": logits ``[B, K, H, W]``; mode "simcc": ``(x [B, K, Wx],
                y [B, K, Hy])`` logits.
            target: the targets, shaped like ``output`` (mode "simcc": ``(gx, gy)``).
            target_weights: ``[B, K]`` (or ``[B, K, 1, ...]``), ≥ 0; None: all 1. Ignored
                when ``use_target_weight`` is False.
            mask: mode "heatmap" only: ``[B, K, H, W]`` or ``[B, 1, H, W]``, non-zero (or
                True) where a pixel is valid. Masked pixels leave the ranking altogether
                (neither positive nor negative) and the Instance-Sort maximum.

        Returns:
            A scalar tensor.

        Raises:
            TypeError: output, target, target_weights or mask is not a tensor.
            ValueError: a mask with mode "simcc", an output that is not ``[B, K, H, W]``, a
                target or mask of another shape or device, and what the losses raise
                (:func:`spatial_rs_loss`, :func:`instance_sort_loss`, their SimCC twins).
            RuntimeError: as those losses.
        """
        tw = target_weights if self.use_target_weight else None
        core = dict(delta=self.delta, backend=self.backend, algorithm=self.algorithm)
        core["process_group"] = distributed.default_group() if self.sync else None
        if self.mode == "simcc":
            if mask is not None:
                raise ValueError("mask: not supported with mode='simcc' (mmpose's SimCC losses "
                                 "take none); pass mask=None")
            spatial = simcc_rs_loss(output, target, tw, pos_thr=self.pos_thr,
                                    grad_mode=self.grad_mode, **core).loss
            if self.instance_weight == 0:
                return self.loss_weight * spatial
            # simcc_rs_loss has checked the pairs; Instance-Sort items: both targets non-zero
            instance = simcc_instance_sort_loss(output, target, tw, sigmas=self.sigmas,
                                                area=self.area, **core)
            return self.loss_weight * (spatial + self.instance_weight * instance)

        checks.tensor("output", output, min_dim=4)
        if output.dim() != 4:
            raise ValueError(f"output: expected shape [B, K, H, W], got {tuple(output.shape)}")
        checks.tensor("target", target)
        checks.same_shape("target", target, "output", output)
        checks.same_device("target", target, "output", output)
        if mask is not None:
            valid = _valid_pixels(mask, output)
            output = torch.where(valid, output, torch.full_like(output, -math.inf))
            target = torch.where(valid, target, torch.zeros_like(target))
        spatial = spatial_rs_loss(output, target, tw, pos_thr=self.pos_thr,
                                  grad_mode=self.grad_mode, **core).loss
        if self.instance_weight == 0:
            return self.loss_weight * spatial
        instance = instance_sort_loss(output, target, tw, sigmas=self.sigmas, area=self.area,
                                      pos_thr=self.pos_thr, **core)
        return self.loss_weight * (spatial + self.instance_weight * instance)
