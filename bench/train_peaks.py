"""What τ does to a trained heatmap head: the shape of its peaks (README, "Why τ matters").

Loads the heatmap checkpoints bench/train_sweep.py saved for a stage and, on bench/train.py's
validation set (labelled keypoints whose target window lies on the heatmap), reports per
variant (mean ± sd over seeds):

- hit: the arg-max is the target's peak pixel;
- gross: the arg-max is more than 2 heatmap pixels from it (a wrong mode, not a wobble);
- contrast: max − mean of its 4 neighbours, in the head's own units (logits for the ranking
  losses: how sharply the peak pixel is singled out);
- positives: the target pixels above τ per heatmap, the rank term's share of the joint
  pixel being 1 / positives.

    python3 -m bench.train_peaks --stage lr --lr 0.01
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from bench.train_data import DataConfig, heatmap_targets, validation_set
from bench.train_models import build_model
from bench.train_sweep import DEFAULT_CKPT

HERE = Path(__file__).resolve().parent


def peak_stats(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
               pos_thr: float) -> dict:
    """Peak statistics of heatmaps ``output`` against their targets (weight > 0 only)."""
    keep = weight > 0
    out, tgt = output[keep], target[keep]                    # [N, H, W]
    h, w = out.shape[-2:]
    idx = out.flatten(1).argmax(-1)
    want = tgt.flatten(1).argmax(-1)
    dx = (idx % w - want % w).abs()
    dy = (idx // w - want // w).abs()
    pad = torch.nn.functional.pad(out[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    flat = pad.flatten(1)
    x, y = idx % w + 1, idx // w + 1
    neighbours = torch.stack([flat.gather(1, ((y + a) * (w + 2) + x + b)[:, None])[:, 0]
                              for a, b in ((0, 1), (0, -1), (1, 0), (-1, 0))]).mean(0)
    return {"hit": (idx == want).float().mean().item(),
            "gross": (torch.maximum(dx, dy) > 2).float().mean().item(),
            "contrast": (out.flatten(1).amax(-1) - neighbours).median().item(),
            "positives": (tgt > pos_thr).flatten(1).sum(-1).float().mean().item()}


def _tau(key: str) -> float:
    if "pos_thr=" not in key:
        return 0.0
    return float(key.split("pos_thr=")[1].split("]")[0].split(",")[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", default="lr")
    ap.add_argument("--lr", type=float, default=0.01, help="the learning rate's checkpoints")
    ap.add_argument("--checkpoints", type=Path, default=DEFAULT_CKPT)
    ap.add_argument("--val-size", type=int, default=512)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = DataConfig()
    val = validation_set(args.val_size, cfg)
    target, weight = heatmap_targets(val["keypoints"], val["visible"], cfg)
    found = {}
    for path in sorted((args.checkpoints / args.stage).glob("*/*.pt")):
        key = path.stem
        if not key.endswith(f"@{args.lr:g}") or key.startswith(("kl", "rspose_simcc")):
            continue
        model = build_model("heatmap", width=16, seed=int(path.parent.name), cfg=cfg)
        model.load_state_dict(torch.load(path))
        model.eval()
        with torch.no_grad():
            out = model(val["images"])
        found.setdefault(key, []).append(peak_stats(out, target, weight, _tau(key)))
    print("| variant | seeds | hit | gross | contrast | positives |\n|---|---|---|---|---|---|")
    for key, stats in found.items():
        def ms(name, digits=3):
            v = [s[name] for s in stats]
            sd = f" ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else ""
            return f"{statistics.fmean(v):.{digits}f}{sd}"
        positives = "—" if key.startswith("mse") else ms("positives", 1)
        print(f"| {key} | {len(stats)} | {ms('hit')} | {ms('gross')} | {ms('contrast', 2)} | "
              f"{positives} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
