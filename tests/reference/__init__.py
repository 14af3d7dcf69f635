"""What the tests trust, in one place.

- ``loop``: the core (docs/DESIGN.md §2) as the slow, obvious per-positive loop, float64;
- ``pose``: Instance-Sort and RSPoseLoss (docs/DESIGN.md §3) as loops over keypoints and
  pixels, built on ``loop``;
- ``parity``: devices, the (mode, δ) grid, backend availability (skip or fail), and the
  comparisons of a backend's rows with the torch reference (``torch_pairwise``) and of a
  public-API result with the loops, at ``rspose_kernels.testing.TOLERANCES``.

``loop`` and ``pose`` import nothing from rspose_kernels, so the package is checked against
the definition, not against itself.
"""
