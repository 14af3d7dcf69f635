"""The Triton backend's default tiles for long rows (L > 1024: the heatmap shapes), which the
short-row parity cases never select: float32 and float64 (its own, smaller pass-A block),
both modes, against the torch reference. Under the interpreter on CPU, so the rows stay sparse."""
import pytest
import torch

from rspose_kernels.testing import random_rows
from tests.reference.parity import against_reference, assert_parity, device_params, require

tk = require("rspose_kernels.backends.triton_backend", "RSPOSE_REQUIRE_TRITON",
             "triton is not installed")
DEVICES = device_params(tk.is_available("cpu"), "CPU needs the interpreter (TRITON_INTERPRET=1)",
                        not tk._INTERPRETED, "compiled kernels need TRITON_INTERPRET unset or 0")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_long_rows_default_tiles(dtype, exact, device):
    scores, labels = random_rows(2, 1100, seed=31, pos_frac=0.03, dtype=dtype, device=device)
    blocks = tk.default_blocks(1100, dtype)
    assert blocks.a_pos == (32 if dtype == torch.float64 else 64)
    assert_parity(*against_reference(tk.rank_sort_rows, scores, labels, 0.5, exact), dtype)
