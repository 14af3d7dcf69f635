"""The one place that knows which backends exist and picks one for a call.

The backends describe themselves (``BACKENDS`` records, rspose_kernels/backends/__init__.py);
this module only knows where each record lives and, as policy, the order "auto" tries them in.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Callable, Optional

import torch

from .backends import Backend

# name -> module under rspose_kernels.backends whose BACKENDS holds its record. Imported on
# first use: a backend whose dependency (triton, the compiled _C) is missing is simply absent.
_MODULES = {
    "torch": "torch_backend",
    "cpu": "native",
    "cuda": "native",
    "triton": "triton_backend",
}

# What "auto" takes, best first, among the available ones. docs/DESIGN.md §4 wants the GPU
# order to be the one bench/run.py measures fastest; no GPU has measured it yet, so Triton
# (compiled for the user's GPU by Triton itself) comes first until one does. A call that may
# take the bucketed algorithm ("auto", the default, or "bucketed") goes to the first kernel
# backend in this order that has it.
AUTO_ORDER = {
    "cuda": ("triton", "cuda", "torch"),
    "cpu": ("cpu", "torch"),
}

BACKEND_NAMES = ("auto",) + tuple(_MODULES)
ALGORITHM_NAMES = ("auto", "pairwise", "bucketed")


@lru_cache(maxsize=None)
def backend_record(name: str) -> Optional[Backend]:
    """The registered record of backend ``name``, or None where its module cannot import."""
    try:
        module = importlib.import_module(f"rspose_kernels.backends.{_MODULES[name]}")
    except ImportError:
        return None
    return next(b for b in module.BACKENDS if b.name == name)


def registered_backends() -> list[Backend]:
    """Every backend whose module imports here, whether or not a device for it is present."""
    return [b for b in map(backend_record, _MODULES) if b is not None]


def _device_type(device) -> str:
    if isinstance(device, torch.Tensor):
        device = device.device
    return torch.device(device).type


def available_backends(device="cpu") -> list[str]:
    """Backends that can run on ``device`` here.

    Args:
        device: "cpu", "cuda", a ``torch.device`` or a tensor.

    Returns:
        Backend names, in registry order.
    """
    dtype = _device_type(device)
    return [b.name for b in registered_backends()
            if dtype in b.devices and b.is_available(dtype)]


def resolve_backend(backend: str, device, algorithm: str = "pairwise") -> str:
    """Turn ``backend`` (a name or "auto") into an available backend name.

    Args:
        backend: one of ``BACKEND_NAMES``.
        device: where the call's tensors are.
        algorithm: the call's; for "auto", "auto" and "bucketed" prefer a kernel backend
            that has the bucketed algorithm (AUTO_ORDER).

    Returns:
        The name of an available backend.

    Raises:
        ValueError: ``backend`` is not a known name.
        RuntimeError: ``backend`` is not available for the device here.
    """
    if not isinstance(backend, str) or backend not in BACKEND_NAMES:
        raise ValueError(
            f"backend: expected one of {list(BACKEND_NAMES)}, got {backend!r}")
    wants_bucketed = algorithm in ("auto", "bucketed")
    return _resolve(backend, _device_type(device), wants_bucketed)


# Under torch.compile the answer is a constant of its arguments: dynamo calls this at trace
# time instead of tracing the imports inside (which would break the graph).
@torch.compiler.assume_constant_result
def _resolve(backend: str, dtype: str, wants_bucketed: bool = False) -> str:
    avail = available_backends(dtype)
    if backend == "auto":
        order = [n for n in AUTO_ORDER.get(dtype, ("torch",)) if n in avail]
        if wants_bucketed:   # a kernel backend with it; torch is the reference, not that
            order = [n for n in order
                     if "bucketed" in backend_record(n).algorithms and n != "torch"] + order
        return order[0] if order else "torch"
    if backend not in avail:
        raise RuntimeError(
            f"backend: {backend!r} is not available for {dtype} tensors here; "
            f"available: {avail} (see rspose_kernels.available_backends)")
    return backend


def available_algorithms(backend: str = "auto", device="cpu") -> list[str]:
    """Algorithms a backend implements; any of them, or "auto", may be passed as
    ``algorithm=`` to the losses.

    Args:
        backend: a name, or "auto" for the backend it picks on ``device``.
        device: where the call's tensors would be.

    Returns:
        Algorithm names, "pairwise" first.

    Raises:
        ValueError, RuntimeError: as :func:`resolve_backend`.
    """
    record = backend_record(backend) if backend in _MODULES else None
    if record is None:
        record = backend_record(resolve_backend(backend, device, "auto"))
    return list(record.algorithms)


def resolve_algorithm(algorithm: str, backend: str) -> str:
    """What a resolved backend is asked to run: "pairwise", "bucketed" or "auto" (per row).

    Pure Python on constants, so torch.compile folds it.

    Raises:
        ValueError: ``algorithm`` is not a known name, or the backend lacks it.
    """
    if not isinstance(algorithm, str) or algorithm not in ALGORITHM_NAMES:
        raise ValueError(f"algorithm: expected one of {list(ALGORITHM_NAMES)}, "
                         f"got {algorithm!r}")
    return _resolve_algorithm(algorithm, backend)


# A constant for dynamo, like _resolve: the record lookup may import a module.
@torch.compiler.assume_constant_result
def _resolve_algorithm(algorithm: str, backend: str) -> str:
    have = backend_record(backend).algorithms
    if algorithm != "auto" and algorithm not in have:
        raise ValueError(f"algorithm: {algorithm!r} is not implemented by the {backend!r} "
                         f"backend, which has {list(have)} "
                         f"(see rspose_kernels.available_algorithms)")
    return algorithm if len(have) > 1 else have[0]


def backend_fn(name: str) -> Callable:
    """The ``rank_sort_rows`` function of an available backend."""
    return backend_record(name).rank_sort_rows
