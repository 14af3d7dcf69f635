"""Expected GPU work per benchmark shape and regime: the pairwise CUDA kernels against the
bucketed path (docs/DESIGN.md §5b). Counts, not times: CPU only, from the inputs bench.run times.

Per row (n positives, ñ negatives left after pruning at min positive score − δ, L elements):

- pairwise: n·(n + ñ) pair evaluations in pass A (ranks, sorting terms) and again in pass B
  (the gradient of every element);
- bucketed (the CUDA design: positives sorted in shared memory, P×P label terms):
  the n positives sorted by a bitonic network padded to p = next power of two, p/2
  compare-exchanges in each of k(k+1)/2 stages (k = log2 p: p·k(k+1)/4 in all; counting
  element-steps, every element in every stage, gives the ≈ p·k²/2 of the first estimate);
  one binary search per surviving negative, ⌈log2(2n+1)⌉ steps over the 2n breakpoints;
  n² positive-positive pairs; and the bytes its kernels move beyond what both paths read and
  write (scores, labels in, gradient out): per negative 4 B score read, 4 B bucket written,
  two integer atomics (count 4 B, fixed-point Σs 8 B), 8 B read back by the gradient gather;
  per row 12 B·(2n+1) of histogram and 16 B·(2n+1) of α/β coefficients.

Rows with more positives than fit in shared memory, n > NP_cap(L), stay pairwise on the GPU:
they are counted apart (``>cap``) and their pairwise pairs enter the bucketed side of ``ratio``:

    ratio = Σ n·(n + ñ)  /  (Σ_bucketed (n² + ñ·log2(2n)) + Σ_>cap n·(n + ñ))   (one pass)

    python3 -m bench.work_model            # the benchmark shapes (~10 s on 2 cores)
    python3 -m bench.work_model --quick    # bench.run's reduced CPU sizes
    python3 -m bench.work_model --lanes    # the GPU tiles' lane occupancy (README table)

Lane occupancy (``--lanes``): of the lanes the pairwise passes' tiles evaluate, the fraction
holding a real (positive, element) pair, Σ n·(n + ñ) over Σ slots, every non-empty row as if
pairwise, float32, identity mode, the default tiles:

- Triton (``triton_backend.default_blocks(L)``): pass A blocks of ``a_pos`` positives × tiles
  of ``a_neg`` negatives, or ``a_pos / 2`` × ``2·a_neg`` where that pads less (each row's own,
  ``triton_backend.pass_a_tile``, as the kernel picks it), then ``a_pp`` positives; pass B
  blocks of ``b_neg`` negatives ×
  tiles of ``b_neg_pos`` positives, and blocks of ``b_pos`` positives × ``b_pos_pos``;
- CUDA (csrc/cuda/rank_sort_kernels.cuh): pass A CTAs of 8 warps × 8 positives in registers,
  lanes striding the elements by 32 (counted: the warps holding a positive, padded to 8; a
  warp without one skips the sweeps and idles at the barriers, not counted); pass B warp
  items of 32 lanes × up to 8 slot rows = 256 elements (negatives, then positives), a short
  item sweeping only 4, 2 or 1 of its slot rows, over the row's positives one by one.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch

from bench.cases import QUICK_SIZES, make_case
from rspose_kernels.backends import cost_model, native
from rspose_kernels.losses import DEFAULT_DELTA
from rspose_kernels.testing import REGIMES, SHAPES

# Bytes the bucketed kernels move (see the module docstring).
NEG_BYTES = 4 + 4 + (4 + 8) + 8
BUCKET_BYTES = 12 + 16


def np_cap(length: int) -> int:
    """The most positives a float32 row may have for the CUDA bucketed path (its sort in
    shared memory); rows above stay pairwise. The kernel's own bound, through _C."""
    return native.cuda_max_positives(length, torch.float32)


def work(n: torch.Tensor, nn: torch.Tensor, length: int) -> dict:
    """The work terms summed over rows of length ``length`` with counts ``n``, ``nn``."""
    n, nn = n.to(torch.int64), nn.to(torch.int64)
    live = n > 0
    capped = live & (n > np_cap(length))
    bucketed = live & ~capped
    nb, nnb = n[bucketed], nn[bucketed]
    k = torch.ceil(torch.log2(nb.double())).long()         # exact on integers < 2^53
    p = torch.ones_like(k) << k
    pairs = n * (n + nn)
    # 2n + 1 ≥ 3 is odd, never a power of two: ⌈log2(2n+1)⌉ = ⌊log2(2n+1)⌋ + 1.
    search_steps = torch.floor(torch.log2(2 * nb.double() + 1)).long() + 1
    bucketed_pairs = nb * nb
    lin = bucketed_pairs.double() + nnb.double() * torch.log2(2 * nb.double())
    return {
        "rows": int(live.sum()), "capped": int(capped.sum()),
        "positives": int(n.sum()), "negatives": int(nn[live].sum()),
        "pairs_a": int(pairs.sum()), "pairs_b": int(pairs.sum()),
        "sorted": int(nb.sum()), "compare_exchanges": int((p * k * (k + 1) // 4).sum()),
        "searches": int(nnb.sum()), "search_steps": int((nnb * search_steps).sum()),
        "pp_pairs": int(bucketed_pairs.sum()),
        "bytes": int((NEG_BYTES * nnb + BUCKET_BYTES * (2 * nb + 1)).sum()),
        # the denominator of ``ratio``
        "bucketed_cost": float(lin.sum()) + float(pairs[capped].sum()),
    }


def ratio(w: dict) -> float:
    """Pairwise pairs (one pass) over the bucketed side's pairs and search steps."""
    return w["pairs_a"] / w["bucketed_cost"] if w["bucketed_cost"] > 0 else math.nan


def case_work(shape: str, regime: str, batch=None, keypoints=None) -> dict:
    """``work`` summed over every row group of a bench.run case (simcc: x and y rows)."""
    case = make_case(shape, regime, batch, keypoints)
    total = {}
    for scores, labels in case.groups:
        counts = cost_model.row_counts(scores, labels, DEFAULT_DELTA, case.pos_thr)
        for key, value in work(counts.n, counts.nn, labels.shape[1]).items():
            total[key] = total.get(key, 0) + value
    total.update(shape=shape, regime=regime, batch=case.batch, keypoints=case.keypoints)
    return total


def _slots(count: torch.Tensor, tile: int) -> torch.Tensor:
    """``count`` rounded up to whole tiles."""
    return (count + tile - 1) // tile * tile


def lane_use(n: torch.Tensor, nn: torch.Tensor, length: int) -> dict:
    """Σ real pairs and Σ lane slots of the pairwise passes' tiles over the non-empty rows."""
    from rspose_kernels.backends.triton_backend import default_blocks, pass_a_lanes, pass_a_tile
    live = n > 0
    n, nn = n[live].to(torch.int64), nn[live].to(torch.int64)
    real = int((n * (n + nn)).sum())
    b = default_blocks(length)
    slots = {
        # each row's own pass-A tile, as the kernel picks it
        "triton_a": pass_a_lanes(n, nn, *pass_a_tile(n, nn, b), b),
        "triton_b": (_slots(nn, b.b_neg) * _slots(n, b.b_neg_pos)
                     + _slots(n, b.b_pos) * _slots(n, b.b_pos_pos)),
        "cuda_a": _slots(n, CUDA_PPW) * (_slots(nn, 32) + _slots(n, 32)),
        "cuda_b": (_cuda_b_slots(nn) + _cuda_b_slots(n)) * n,
    }
    return {"real": real, **{k: int(v.sum()) for k, v in slots.items()}}


# The CUDA kernels' pairwise tiles (csrc/cuda/rank_sort_kernels.cuh, float32 identity mode):
# pass A's positives per warp (ppw) and pass B's elements per warp item (32 × ept).
CUDA_PPW = 8
CUDA_CHUNK = 32 * 8


def _cuda_b_slots(count: torch.Tensor) -> torch.Tensor:
    """Slots pass B's warp items sweep for a list of ``count`` elements: whole 256-slot
    items, and a last one sweeping 8, 4, 2 or 1 rows of 32 (pass_b_kernel's nr dispatch)."""
    rem = count % CUDA_CHUNK
    nr = (rem + 31) // 32
    rows = torch.where(nr > 4, 8, torch.where(nr > 2, 4, nr))
    return count // CUDA_CHUNK * CUDA_CHUNK + 32 * rows


LANE_KEYS = ("triton_a", "triton_b", "cuda_a", "cuda_b")


def case_lanes(shape: str, regime: str, batch=None, keypoints=None) -> dict:
    """``lane_use`` summed over a bench.run case's row groups."""
    case = make_case(shape, regime, batch, keypoints)
    total = {"real": 0, **{k: 0 for k in LANE_KEYS}}
    for scores, labels in case.groups:
        counts = cost_model.row_counts(scores, labels, DEFAULT_DELTA, case.pos_thr)
        for key, value in lane_use(counts.n, counts.nn, labels.shape[1]).items():
            total[key] += value
    total.update(shape=shape, regime=regime)
    return total


def lanes_markdown(rows) -> list[str]:
    """The README's lane table: one line per case, percent of lanes holding a real pair."""
    out = ["| case | Triton pass A | Triton pass B | CUDA pass A | CUDA pass B |",
           "|---|---|---|---|---|"]
    for w in rows:
        cells = [f"{100 * w['real'] / w[k]:.0f} %" + (" **<½**" if 2 * w["real"] < w[k] else "")
                 if w[k] else "—" for k in LANE_KEYS]
        out.append(f"| {w['shape']} {w['regime']} | " + " | ".join(cells) + " |")
    return out


def si(v: float) -> str:
    """3 significant digits with a k/M/G/T suffix."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


COLUMNS = (   # (heading, width, key or function of the work dict)
    ("case", 16, lambda w: f"{w['shape']} {w['regime']}"),
    ("b x k", 6, lambda w: f"{w['batch']}x{w['keypoints']}"),
    ("rows", 5, "rows"), (">cap", 4, "capped"), ("Σn", 6, "positives"),
    ("Σñ", 6, "negatives"), ("pairs A", 7, "pairs_a"), ("pairs B", 7, "pairs_b"),
    ("sorted", 6, "sorted"), ("cmp-exch", 8, "compare_exchanges"),
    ("searches", 8, "searches"), ("srch steps", 10, "search_steps"), ("P×P", 6, "pp_pairs"),
    ("MB", 6, lambda w: f"{w['bytes'] / 1e6:.3g}"),
    ("ratio", 6, lambda w: f"{ratio(w):.3g}"),
)


def format_rows(works) -> list[str]:
    def cell(w, key):
        return key(w) if callable(key) else si(w[key])
    lines = ["  ".join(h.ljust(wd) if i < 2 else h.rjust(wd)
                       for i, (h, wd, _) in enumerate(COLUMNS))]
    for w in works:
        lines.append("  ".join(cell(w, key).ljust(wd) if i < 2 else cell(w, key).rjust(wd)
                               for i, (_, wd, key) in enumerate(COLUMNS)))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true",
                    help="bench.run's reduced CPU sizes (first b items, k keypoints)")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma list of %(default)s")
    ap.add_argument("--regimes", default=",".join(REGIMES), help="comma list of %(default)s")
    ap.add_argument("--lanes", action="store_true",
                    help="print the GPU tiles' lane occupancy (markdown) instead")
    a = ap.parse_args(argv)
    works = []
    for shape in (s for s in a.shapes.split(",") if s):
        if shape not in SHAPES:
            raise SystemExit(f"--shapes: unknown shape {shape!r}; expected some of "
                             f"{list(SHAPES)}")
        for regime in (r for r in a.regimes.split(",") if r):
            if regime not in REGIMES:
                raise SystemExit(f"--regimes: unknown regime {regime!r}; expected some of "
                                 f"{REGIMES}")
            size = QUICK_SIZES[shape] if a.quick else (None, None)
            works.append(case_lanes(shape, regime, *size) if a.lanes
                         else case_work(shape, regime, *size))
    if a.lanes:
        print("\n".join(lanes_markdown(works)))
        print(f"# δ = {DEFAULT_DELTA}, the package's τ; float32, identity mode, every non-empty "
              f"row pairwise; **<½**: a launch mostly idle")
        return 0
    print("\n".join(format_rows(works)))
    print(f"# δ = {DEFAULT_DELTA}; pairs A/B: pairwise pass A/B, n·(n+ñ) each; sorted, cmp-exch: "
          f"bitonic sort of the positives; srch steps: Σ ñ·⌈log2(2n+1)⌉; P×P: n² label-term "
          f"pairs; MB: bucketed-kernel traffic; ratio: pairs A / (P×P + Σ ñ·log2(2n) + >cap "
          f"rows' pairs); >cap: rows with n > NP_cap(L) = min(L, 4096, max(64, ⌈L/8⌉)) "
          f"(float32), pairwise on the GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
