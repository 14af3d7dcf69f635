"""The one place that knows which backends exist and picks one for a call."""
from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Callable

import torch

# name -> module under rspose_kernels.backends implementing the contract in backends/__init__.py
_MODULES = {
    "torch": "torch_backend",
    "cpu": "native",
    "cuda": "native",
    "triton": "triton_kernels",
}

# What "auto" takes, best first, among the available ones. SPEC §4 wants the GPU order to be
# the one bench/run.py measures fastest; no GPU has measured it yet, so Triton (the backend
# most users run, compiled for their GPU by Triton itself) comes first until one does, for
# pairwise calls. A call that may take the bucketed algorithm (algorithm "auto", the default,
# or "bucketed") goes to the first kernel backend in this order that has it (SPEC §5b
# estimates it 20-50x faster on the rows it takes); both GPU backends have it (Triton for
# float32 accumulation: its float64 rows stay pairwise, backends/triton_bucketed.py).
AUTO_ORDER = {
    "cuda": ("triton", "cuda", "torch"),
    "cpu": ("cpu", "torch"),
}

BACKEND_NAMES = ("auto",) + tuple(_MODULES)

# The algorithms of the core each backend implements (SPEC §5b). Every backend accepts
# "auto": the per-row cost model (backends/cost_model.py) where there is a choice, pairwise
# where there is none.
ALGORITHMS = {
    "torch": ("pairwise", "bucketed"),
    "cpu": ("pairwise", "bucketed"),
    "cuda": ("pairwise", "bucketed"),
    "triton": ("pairwise", "bucketed"),   # bucketed for float32 accumulation only
}
ALGORITHM_NAMES = ("auto", "pairwise", "bucketed")


@lru_cache(maxsize=None)
def _module(name: str):
    try:
        return importlib.import_module(f"rspose_kernels.backends.{_MODULES[name]}")
    except ImportError:
        # A backend whose dependency (triton, the compiled _C) is missing is simply absent.
        return None


def _device_type(device) -> str:
    if isinstance(device, torch.Tensor):
        device = device.device
    return torch.device(device).type


def available_backends(device="cpu") -> list[str]:
    """Backends that can run on ``device`` ("cpu", "cuda" or a torch.device) here."""
    dtype = _device_type(device)
    names = []
    for name in _MODULES:
        mod = _module(name)
        if mod is not None and mod.is_available(dtype) and _runs_on(name, dtype):
            names.append(name)
    return names


def _runs_on(name: str, device_type: str) -> bool:
    # "cpu" and "cuda" share one module; each name runs on its own device only.
    if name == "cpu":
        return device_type == "cpu"
    if name == "cuda":
        return device_type == "cuda"
    return True


def resolve_backend(backend: str, device, algorithm: str = "pairwise") -> str:
    """Turn ``backend`` (a name or "auto") into an available backend name, or raise. For
    "auto", ``algorithm`` (the call's) decides whether a backend with the bucketed algorithm
    is preferred (AUTO_ORDER)."""
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
            order = [n for n in order if "bucketed" in ALGORITHMS[n] and n != "torch"] + order
        return order[0] if order else "torch"
    if backend not in avail:
        raise RuntimeError(
            f"backend: {backend!r} is not available for {dtype} tensors here; "
            f"available: {avail} (see rspose_kernels.available_backends)")
    return backend


def available_algorithms(backend: str = "auto", device="cpu") -> list[str]:
    """Algorithms ``backend`` implements (for "auto": the backend it picks on ``device``);
    any of them, or "auto", may be passed as ``algorithm=`` to the losses."""
    if backend == "auto" or backend not in ALGORITHMS:
        backend = resolve_backend(backend, device, "auto")   # raises for an unknown name
    return list(ALGORITHMS[backend])


def resolve_algorithm(algorithm: str, backend: str) -> str:
    """What a resolved backend is asked to run: "pairwise", "bucketed" or "auto" (per row);
    "auto" becomes "pairwise" on a backend without a choice. Raises for a name the backend
    lacks. Pure Python on constants, so torch.compile folds it."""
    if not isinstance(algorithm, str) or algorithm not in ALGORITHM_NAMES:
        raise ValueError(f"algorithm: expected one of {list(ALGORITHM_NAMES)}, "
                         f"got {algorithm!r}")
    have = ALGORITHMS[backend]
    if algorithm == "auto":
        return "auto" if len(have) > 1 else have[0]
    if algorithm not in have:
        raise ValueError(f"algorithm: {algorithm!r} is not implemented by the {backend!r} "
                         f"backend, which has {list(have)} "
                         f"(see rspose_kernels.available_algorithms)")
    return algorithm


def backend_fn(name: str) -> Callable:
    """The ``rank_sort_rows`` function of an available backend."""
    return _module(name).rank_sort_rows
