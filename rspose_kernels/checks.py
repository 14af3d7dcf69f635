"""Argument checks (docs/DESIGN.md §9): each error names the argument and what was expected.

Shape, dtype and device checks read metadata only. Value checks (labels in [0, 1], weights
≥ 0) raise a ValueError at once on CPU in eager mode; on CUDA, and under torch.compile, they
become a device-side assert, so they never add a host sync to the GPU hot path.
"""
from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")
GRAD_MODES = ("identity", "exact")


def tensor(name, value, *, min_dim=1):
    """A floating tensor of at least ``min_dim`` dims.

    Raises:
        TypeError: not a tensor.
        ValueError: not float16 / bfloat16 / float32 / float64, or too few dims.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected a floating dtype "
                         f"(float16, bfloat16, float32, float64), got {value.dtype}")
    if value.dim() < min_dim:
        raise ValueError(f"{name}: expected at least {min_dim} dimension(s), "
                         f"got shape {tuple(value.shape)}")


def same_shape(name, value, ref_name, ref):
    """Raises ValueError unless ``value`` has the shape of ``ref``."""
    if value.shape != ref.shape:
        raise ValueError(f"{name}: expected the shape of {ref_name} {tuple(ref.shape)}, "
                         f"got {tuple(value.shape)}")


def same_device(name, value, ref_name, ref):
    """Raises ValueError unless ``value`` is on the device of ``ref``."""
    if value.device != ref.device:
        raise ValueError(f"{name}: expected a tensor on {ref.device} like {ref_name}, "
                         f"got one on {value.device}")


def no_gradient_wanted(name, value):
    """Labels are constants of the loss: it has no gradient with respect to them, so one that
    asks for a gradient (under grad mode) is refused rather than silently given none.

    Raises:
        ValueError: ``value`` requires grad and grad mode is on.
    """
    if value.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{name}: expected a tensor that does not require grad (the loss has "
                         f"no gradient with respect to it); pass {name}.detach()")


def number(name, value, *, minimum=None, strict=False):
    """A finite int or float (not a bool), ``>= minimum`` (``> minimum`` when ``strict``).

    Raises:
        ValueError: not a finite number, or below the minimum.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not -math.inf < value < math.inf:
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name}: expected a number {'>' if strict else '>='} {minimum}, "
                         f"got {value!r}")


def choice(name, value, options):
    """Raises ValueError unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name}: expected one of {list(options)}, got {value!r}")


def values(ok: torch.Tensor, message: str):
    """Assert a boolean tensor condition without syncing the GPU.

    Args:
        ok: a 0-dim bool tensor.
        message: the error message.

    Raises:
        ValueError: on CPU in eager mode, at once, when ``ok`` is False. On CUDA and under
            torch.compile the check is a device-side assert (``torch._assert_async``),
            reported at the next synchronisation.
    """
    if ok.device.type == "cpu" and not torch.compiler.is_compiling():
        if not bool(ok):
            raise ValueError(message)
    else:
        torch._assert_async(ok, message)


def labels_in_unit_range(name, labels):
    """Labels in [0, 1], NaN refused (a :func:`values` check)."""
    if labels.numel() == 0:
        return
    # One reduction pass (NaN propagates into both ends), not three elementwise passes and
    # their bool temporaries: the check alone cost more than an MSE loss
    # (docs/CPU_PROFILE.md).
    lo, hi = torch.aminmax(labels)
    values((lo >= 0) & (hi <= 1), f"{name}: expected values in [0, 1] (no NaN)")


def row_weight(name, weight, lead_shape, ref):
    """Per-row weights broadcastable to the leading dims of the scores, ≥ 0.

    Raises:
        TypeError: not a tensor.
        ValueError: another device than ``ref``, a shape that does not broadcast to
            ``lead_shape``, or (a :func:`values` check) a negative or NaN weight.
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(weight).__name__}")
    same_device(name, weight, "scores", ref)
    try:
        fits = torch.broadcast_shapes(weight.shape, lead_shape) == lead_shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{name}: expected a shape broadcastable to the rows "
                         f"{tuple(lead_shape)}, got {tuple(weight.shape)}")
    values((weight >= 0).all(), f"{name}: expected values >= 0 (no NaN)")
