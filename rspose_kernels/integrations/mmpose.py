"""Registers ``RSPoseLoss`` in mmpose's ``MODELS`` registry and codecs for logit heads in
its ``KEYPOINT_CODECS``, so an mmpose config can train and decode with them:

    custom_imports = dict(imports=['rspose_kernels.integrations.mmpose'],
                          allow_failed_imports=False)
    codec = dict(type='LogitUDPHeatmap', input_size=(192, 256), heatmap_size=(48, 64),
                 sigma=2)
    model = dict(..., head=dict(..., loss=dict(type='RSPoseLoss'), decoder=codec))

A head trained with RSPoseLoss outputs logits; mmpose's stock decoders assume MSE heatmaps
in [0, 1] (a maximum ≤ 0 becomes a missing keypoint at −1; UDP takes
``log(clip(heatmap, 1e-3, 50))``). ``LogitMSRAHeatmap``, ``LogitUDPHeatmap`` and
``LogitSimCCLabel`` keep their stock codec's encoding (targets, weights, the data pipeline)
and decode through ``rspose_kernels.decode``: the arg-max refined by a DARK step on
``exp(logit − max)`` and ``softplus(max logit)`` as the keypoint score: positive, the logit
itself where a trained head's maxima lie, so ``CocoMetric``'s ``keypoint_score_thr`` (0.2
keeps logits above −1.5) and its box × keypoint rescoring apply (README, "Decoding").

This is the only module of the package that imports mmpose. Without mmpose (or with an mmpose
that cannot import) it still imports: ``MMPOSE_AVAILABLE`` is False and ``MMPOSE_IMPORT_ERROR``
says why; ``CODECS_AVAILABLE`` / ``CODECS_IMPORT_ERROR`` say the same of the codecs.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import decode as _decode
from ..pose import RSPoseLoss

__all__ = ["CODECS_AVAILABLE", "CODECS_IMPORT_ERROR", "MMPOSE_AVAILABLE",
           "MMPOSE_IMPORT_ERROR", "RSPoseLoss", "register", "register_codecs"]

MMPOSE_AVAILABLE = False
MMPOSE_IMPORT_ERROR: str | None = None
CODECS_AVAILABLE = False
CODECS_IMPORT_ERROR: str | None = None
CODEC_NAMES = ("LogitMSRAHeatmap", "LogitUDPHeatmap", "LogitSimCCLabel")


def register(registry) -> None:
    """Put ``RSPoseLoss`` into an mmengine registry (idempotent).

    Reads ``module_dict`` rather than ``registry.get``: ``get`` first imports every module of
    the registry's location (all of ``mmpose.models``), which is neither needed nor cheap here.

    Args:
        registry: an mmengine ``Registry``, e.g. ``mmpose.registry.MODELS`` (done at import
            when mmpose is present).

    Raises:
        KeyError: (mmengine's) a different class is already registered as "RSPoseLoss".
    """
    if registry.module_dict.get("RSPoseLoss") is not RSPoseLoss:
        # force=False: a different class already registered under this name is an error.
        registry.register_module(name="RSPoseLoss", module=RSPoseLoss)


try:
    from mmpose.registry import MODELS
except ImportError as exc:
    MODELS = None
    MMPOSE_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    register(MODELS)
    MMPOSE_AVAILABLE = True


# ----------------------------------------------------------------------------- codecs

def _heatmap_decode(codec, encoded: np.ndarray, scale) -> tuple[np.ndarray, np.ndarray]:
    """[K, H, W] logits -> keypoints [1, K, 2] (input pixels), scores [1, K]."""
    xy, score = _decode.decode_heatmaps(torch.from_numpy(np.ascontiguousarray(encoded)),
                                        sigma=float(codec.sigma))
    return (xy.numpy() * np.asarray(scale, dtype=np.float32))[None], score.numpy()[None]


def _make_codecs(codecs):
    """The logit-head codecs as subclasses of mmpose's.

    Args:
        codecs: the ``mmpose.codecs`` module.

    Returns:
        ``{name: class}`` for ``CODEC_NAMES``.
    """

    class LogitMSRAHeatmap(codecs.MSRAHeatmap):
        """``MSRAHeatmap`` whose decode reads RSPose logits (rspose_kernels.decode)."""

        def decode(self, encoded):
            """``[K, H, W]`` logits → ``(keypoints [1, K, 2] in input pixels, scores [1, K])``,
            by ``rspose_kernels.decode.decode_heatmaps`` with the codec's σ."""
            return _heatmap_decode(self, encoded, self.scale_factor)

    class LogitUDPHeatmap(codecs.UDPHeatmap):
        """``UDPHeatmap`` (``heatmap_type='gaussian'``) whose decode reads RSPose logits;
        UDP's scale (input − 1) / (heatmap − 1) maps heatmap pixels to input pixels."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.heatmap_type != "gaussian":
                raise ValueError(f"heatmap_type: LogitUDPHeatmap decodes 'gaussian' heatmaps, "
                                 f"got {self.heatmap_type!r}")

        def decode(self, encoded):
            """As ``LogitMSRAHeatmap.decode``, scaled by UDP's factor."""
            return _heatmap_decode(self, encoded, self.scale_factor)

    class LogitSimCCLabel(codecs.SimCCLabel):
        """``SimCCLabel`` whose decode reads RSPose (or KL) logits: the 1-D DARK step on
        ``exp(logit − max)`` with the labels' σ in bins, softplus of the weaker axis'
        maximum as the score. ``decode_visibility`` keeps mmpose's visibility estimate."""

        def decode(self, simcc_x, simcc_y):
            """``[N, K, Wx]`` and ``[N, K, Hy]`` logits (or one instance without N) →
            ``(keypoints [N, K, 2] in input pixels, scores [N, K])``, or
            ``(keypoints, (scores, visibility))`` when ``decode_visibility``."""
            xy, score = _decode.decode_simcc(
                torch.from_numpy(np.ascontiguousarray(simcc_x)),
                torch.from_numpy(np.ascontiguousarray(simcc_y)),
                sigma=tuple(float(s) for s in self.sigma))
            keypoints = xy.numpy() / self.simcc_split_ratio
            scores = score.numpy()
            if keypoints.ndim == 2:   # single instance, as the stock decode
                keypoints, scores = keypoints[None], scores[None]
            if self.decode_visibility:
                _, (_, visibility) = super().decode(simcc_x, simcc_y)
                # (the stock decode leaves a single instance's visibility unbatched)
                return keypoints, (scores, np.asarray(visibility).reshape(scores.shape))
            return keypoints, scores

    return {c.__name__: c for c in (LogitMSRAHeatmap, LogitUDPHeatmap, LogitSimCCLabel)}


def register_codecs(registry, codecs) -> dict:
    """Put the logit-head codecs into an mmengine registry (idempotent).

    Args:
        registry: an mmengine ``Registry``, e.g. ``mmpose.registry.KEYPOINT_CODECS`` (done at
            import when mmpose's codecs import).
        codecs: the ``mmpose.codecs`` module, whose classes they subclass.

    Returns:
        ``{name: class}`` for ``LogitMSRAHeatmap``, ``LogitUDPHeatmap``, ``LogitSimCCLabel``:
        the ones already registered by this module, else newly made and registered.

    Raises:
        KeyError: (mmengine's) another class is already registered under one of the names.
    """
    made = {}
    for name in CODEC_NAMES:
        existing = registry.module_dict.get(name)
        if existing is not None and getattr(existing, "__module__", None) == __name__:
            made[name] = existing
    if len(made) == len(CODEC_NAMES):
        return made
    made = _make_codecs(codecs)
    for name, cls in made.items():
        cls.__module__ = __name__
        registry.register_module(name=name, module=cls)
    return made


if MMPOSE_AVAILABLE:
    try:
        import mmpose.codecs as _mmpose_codecs
        from mmpose.registry import KEYPOINT_CODECS
    except Exception as exc:   # noqa: BLE001 -- mmpose raises ImportError or AssertionError
        KEYPOINT_CODECS = None
        CODECS_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    else:
        globals().update(register_codecs(KEYPOINT_CODECS, _mmpose_codecs))
        CODECS_AVAILABLE = True
else:
    KEYPOINT_CODECS = None
    CODECS_IMPORT_ERROR = MMPOSE_IMPORT_ERROR
