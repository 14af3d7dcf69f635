"""Registers ``RSPoseLoss`` in mmpose's ``MODELS`` registry, so an mmpose config can use it:

    custom_imports = dict(imports=['rspose_kernels.integrations.mmpose'],
                          allow_failed_imports=False)
    model = dict(..., head=dict(..., loss=dict(type='RSPoseLoss', instance_weight=1.0)))

This is the only module of the package that imports mmpose. Without mmpose (or with an mmpose
that cannot import) it still imports: ``MMPOSE_AVAILABLE`` is False and ``MMPOSE_IMPORT_ERROR``
says why.
"""
from __future__ import annotations

from ..pose import RSPoseLoss

__all__ = ["MMPOSE_AVAILABLE", "MMPOSE_IMPORT_ERROR", "RSPoseLoss", "register"]

MMPOSE_AVAILABLE = False
MMPOSE_IMPORT_ERROR: str | None = None


def register(registry) -> None:
    """Put ``RSPoseLoss`` into an mmengine registry (idempotent).

    Reads ``module_dict`` rather than ``registry.get``: ``get`` first imports every module of
    the registry's location (all of ``mmpose.models``), which is neither needed nor cheap here.
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
