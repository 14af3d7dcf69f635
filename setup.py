"""rspose-kernels: fused ranking-based pose losses (Spatial Rank & Sort, Instance-Sort)."""
from setuptools import find_packages, setup

setup(
    name="rspose-kernels",
    version="0.1.0",
    description="Sort-free Rank & Sort pose losses as fused CUDA/Triton/C++ kernels for PyTorch",
    packages=find_packages(include=["rspose_kernels", "rspose_kernels.*"]),
    python_requires=">=3.9",
    # torch is deliberately not a hard requirement here: pip would resolve a CUDA build of
    # several GB on machines that have none. Install the torch you want first.
    install_requires=["numpy"],
    extras_require={"triton": ["triton>=3.6"], "test": ["pytest"]},
)
