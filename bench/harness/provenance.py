"""Where and on what a run ran: commit, device, library versions, load."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def git_commit() -> str:
    """The checkout's commit.

    Returns:
        ``RSPOSE_GIT_COMMIT`` when set (machines without ``.git``), else the short hash of
        HEAD with "+dirty" when tracked files are modified, else "unknown".
    """
    if os.environ.get("RSPOSE_GIT_COMMIT"):
        return os.environ["RSPOSE_GIT_COMMIT"]
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device_type: str) -> str:
    """The GPU's name, or the CPU's model name with its number of CPUs.

    Args:
        device_type: "cpu" or "cuda".

    Returns:
        E.g. "NVIDIA H200" or "AMD EPYC (2 cpus)".
    """
    if device_type == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cpus)"


def package_version(name: str) -> str:
    """A distribution's version from its metadata (importing it, triton on a CPU, is neither
    needed nor safe), or "" when it is not installed."""
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return ""


def load_avg():
    """1-minute load average (a shared machine's timings are only as good as this is low),
    or "" where the OS has none."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else ""


def environment(device_type: str, run_kind: str, dtype: torch.dtype) -> dict:
    """The provenance columns every result row carries.

    Args:
        device_type: "cpu" or "cuda".
        run_kind: the ``run`` column ("full", "quick", "custom", "cputime", ...).
        dtype: the score dtype of the run.

    Returns:
        A dict of date, run_id, run, commit, device, device_type, threads, torch, triton,
        cuda and dtype.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "date": now.strftime("%Y-%m-%d"),
        "run_id": now.strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}",
        "run": run_kind,
        "commit": git_commit(),
        "device": device_name(device_type),
        "device_type": device_type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "cuda": torch.version.cuda or "",
        "dtype": str(dtype).replace("torch.", ""),
    }
