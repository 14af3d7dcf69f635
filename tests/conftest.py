import os
import sys

import pytest
import torch  # importing torch does not import triton

# Without a GPU, Triton kernels run on CPU tensors in its interpreter, which must be chosen
# before triton is first imported. With a GPU the real kernels run (TRITON_INTERPRET=1 can
# still force the interpreter).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tests.reference import parity  # noqa: E402 (after TRITON_INTERPRET is chosen)

# The helpers' old top-level name, for the test files that still write `from parity import`
# (tests/test_cuda_bucketed.py, test_cuda_launch.py, test_gpu_compile.py): remove once they
# import tests.reference.parity.
sys.modules.setdefault("parity", parity)


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
