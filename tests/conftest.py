import os

import pytest
import torch  # importing torch does not import triton

# Without a GPU, Triton kernels run on CPU tensors in its interpreter, which must be chosen
# before triton is first imported. With a GPU the real kernels run (TRITON_INTERPRET=1 can
# still force the interpreter).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")



@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
