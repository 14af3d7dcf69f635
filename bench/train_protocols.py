"""The top-down protocol with detected boxes beside bench/train.py's ground-truth-box one, on
the checkpoints bench/train_sweep.py saves.

Why: with ground-truth boxes (train_eval.evaluate) there is one crop per person and the
instance score only ranks people against each other. The RSPose paper credits its AP gain to
keypoint confidence that tracks localisation quality, which pays where a detector gives
several boxes per person and some on nobody: the keypoint scores rescore every box, OKS-NMS
keeps one pose per person, and the score orders what is left. This is that protocol, as
mmpose's ``CocoMetric`` runs it on detector results, on the scenes of bench/train_scenes.py:

1. every candidate crop is predicted (train.predict) and its keypoints mapped back to scene
   pixels;
2. rescoring, ``score_mode='bbox_keypoint'``: instance score = box score × the mean of the
   keypoint scores above ``keypoint_score_thr`` (mmpose's default 0.2; 0 when none is above;
   ``None``: every keypoint — the ground-truth protocol's choice, as the losses put confidence
   on different scales);
3. OKS-NMS per scene, ``nms_mode='oks_nms'``, ``nms_thr=0.9``;
4. pycocotools COCOeval (keypoints, COCO sigmas) on the scenes' ground truth.

Reported: AP, AP50, AP75; the Spearman correlations, over the kept detections, of instance
score with instance OKS (each detection against its best-OKS person; a false positive's best
is low) and of keypoint confidence with keypoint OKS (against that person, over its labelled
keypoints); the mean of that OKS. And the same for an *oracle* selection: per person, only the
candidate whose pose has the best OKS with it, scored as in 2 — the top-1 selection upper
bound, which separates what selection (rescoring + NMS) loses from what localisation loses.

Note on step 2 with no threshold: a ranking loss trains logits, whose maxima may be negative;
box score × a negative mean then ranks a better box *lower*. That is mmpose's rule applied to
such scores, reported as it is; the 0.2 threshold maps those instances to 0 instead.

    python3 -m bench.train_protocols --stage lr                    # every checkpoint of a stage
    python3 -m bench.train_protocols --stage lr --variants mse@0.01,kl@0.01 --seeds 0,1
    python3 -m bench.train_protocols --summary lr                  # the table again, from the CSV

Rows go to bench/results/train.csv (``run`` = ``protocols-<stage>``) with ``protocol`` "gt",
"candidates-thr0.2", "candidates-nothr", "candidates-oracle-thr0.2", "candidates-oracle-nothr"
and ``decoder`` one of train_eval.DECODERS; ``val_size`` is the number of crops under "gt" and
of scenes under the candidate protocols; ``steps`` and ``batch`` are the stage's budget
(train_sweep.stage_budget; ``--quick`` for a quick sweep's checkpoints); the training columns
(ms_step, train_loss, …) stay empty, PCK too under the candidate protocols (no box per crop
to normalise by).
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import rspose_kernels as rk
from bench import train_eval
from bench.harness.provenance import environment, load_avg, package_version
from bench.harness.results import append_csv
from bench.train_data import DataConfig, validation_set
from bench.train_eval import (
    COCO_SIGMAS,
    _coco,
    _spearman,
    as_number,
    coco_eval,
    keypoint_oks,
    mean_sd,
)
from bench.train_scenes import Scenes, make_scenes, scene_ground_truth, to_scene

HERE = Path(__file__).resolve().parent

NMS_THR = 0.9                 # mmpose CocoMetric's default
KEYPOINT_SCORE_THR = 0.2      # mmpose CocoMetric's default
THRESHOLDS = {"thr0.2": 0.2, "nothr": None}
VAL_SCENES = 200
VAL_SIZE = 512                # bench/train.py's full budget


# ----------------------------------------------------------------------------- mmpose's rules

def rescore(box_score, keypoint_scores, keypoint_score_thr=KEYPOINT_SCORE_THR):
    """mmpose ``CocoMetric(score_mode='bbox_keypoint')``: box score [N] × the mean of the
    keypoint scores [N, K] *strictly above* the threshold (0 when none is; ``None``: all)."""
    box_score = np.asarray(box_score, dtype=np.float64)
    kpt = np.asarray(keypoint_scores, dtype=np.float64)
    if keypoint_score_thr is None:
        return box_score * kpt.mean(1)
    above = kpt > keypoint_score_thr
    n = above.sum(1)
    mean = np.where(n > 0, (kpt * above).sum(1) / np.maximum(n, 1), 0.0)
    return box_score * mean


def oks_iou(g, d, a_g, a_d, sigmas=COCO_SIGMAS):
    """mmpose ``oks_iou`` (vis_thr None): OKS of pose ``g`` [K, 2] against poses ``d``
    [M, K, 2], the scale the mean of the two areas, every keypoint counted; float32 as
    mmpose returns it."""
    var = (2 * np.asarray(sigmas)) ** 2
    d2 = ((np.asarray(d, dtype=np.float64) - np.asarray(g, dtype=np.float64)[None]) ** 2).sum(-1)
    e = d2 / var[None] / ((a_g + np.asarray(a_d, dtype=np.float64))[:, None] / 2
                          + np.spacing(1)) / 2
    return np.exp(-e).mean(1).astype(np.float32)


def oks_nms(keypoints, scores, areas, thr=NMS_THR, sigmas=COCO_SIGMAS):
    """mmpose ``oks_nms`` (mmpose/evaluation/functional/nms.py, as ``CocoMetric`` calls it
    with ``nms_mode='oks_nms'``): greedy by descending score, keep the best, drop every
    remaining pose whose OKS with it exceeds ``thr`` (keep ``<= thr``), repeat. keypoints
    [N, K, 2], scores [N], areas [N] (mmpose: the product of the crop's ``bbox_scale``).
    Returns the kept indices in the order kept.

    Ties in score: mmpose orders by ``scores.argsort()[::-1]``; numpy's default sort is an
    introsort whose small-array base case is an insertion sort, i.e. stable, so a stable sort
    reversed is the same order (later index first) for the ≤ 16 candidates of a scene."""
    scores = np.asarray(scores)
    if scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    kpts = np.asarray(keypoints, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        ovr = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas)
        order = order[1:][ovr <= thr]
    return np.array(keep, dtype=np.int64)


# ----------------------------------------------------------------------------- the protocol

def pose_oks(pred, scenes: Scenes, scene):
    """COCO's OKS of poses ``pred`` [N, K, 2] (scene px) against every person of their scenes
    ``scene`` [N]: instance OKS [N, P] (−1 in unused slots) and per-keypoint terms
    [N, P, K]."""
    p = scenes.people
    gt = p["keypoints"][scene].double()                           # [N, P, K, 2]
    n, P = gt.shape[:2]
    pred = torch.as_tensor(pred).double()[:, None].expand(n, P, -1, -1)
    terms = keypoint_oks(pred.reshape(n * P, -1, 2), gt.reshape(n * P, -1, 2),
                         p["area"][scene].reshape(-1)).reshape(n, P, -1)
    labelled = p["visible"][scene].numpy() > 0
    inst = (terms * labelled).sum(-1) / np.maximum(labelled.sum(-1), 1)
    return np.where(p["on"][scene].numpy(), inst, -1.0), terms


def _select_metrics(scenes, coco_gt, pred, conf, score, keep) -> dict:
    """COCOeval and the correlations for the detections ``keep`` of the candidates."""
    c = scenes.candidates
    scene = c["scene"][torch.as_tensor(keep)]
    dets = []
    for j, i in enumerate(keep.tolist()):
        flat = np.concatenate([pred[i], conf[i][:, None]], 1).reshape(-1)
        dets.append({"image_id": int(scene[j]) + 1, "category_id": 1,
                     "keypoints": flat.tolist(), "score": float(score[i])})
    ev = coco_eval(coco_gt, dets)
    inst, terms = pose_oks(pred[keep], scenes, scene)
    match = inst.argmax(1)
    best = inst[np.arange(len(keep)), match]
    kpt_oks = terms[np.arange(len(keep)), match]                  # [n, K]
    labelled = scenes.people["visible"][scene, torch.as_tensor(match)].numpy() > 0
    return {"AP": float(ev.stats[0]), "AP50": float(ev.stats[1]), "AP75": float(ev.stats[2]),
            "rho_kpt": _spearman(conf[keep][labelled], kpt_oks[labelled]),
            "rho_inst": _spearman(score[keep], best), "OKS": float(best.mean()),
            "detections": int(len(keep))}


def score_candidates(scenes: Scenes, pred_crop, conf, keypoint_score_thr=KEYPOINT_SCORE_THR,
                     coco_gt=None) -> dict:
    """The protocol from predictions: ``pred_crop`` [N, K, 2] (crop pixels) and ``conf``
    [N, K] for the N candidates of ``scenes``. Returns AP, AP50, AP75, rho_kpt, rho_inst, OKS,
    detections (kept by NMS), and the same prefixed ``oracle_``."""
    c = scenes.candidates
    if coco_gt is None:
        coco_gt = _coco(scene_ground_truth(scenes))
    pred = to_scene(torch.as_tensor(pred_crop).double(), c["centre"].double(),
                    c["scale"].double(), scenes.cfg).numpy()
    conf = torch.as_tensor(conf).double().numpy()
    score = rescore(c["box_score"].numpy(), conf, keypoint_score_thr)
    areas = c["scale"].double().prod(-1).numpy()                  # mmpose: prod(bbox_scale)
    scene = c["scene"].numpy()
    keep = []
    for s in np.unique(scene):
        idx = np.flatnonzero(scene == s)
        keep.extend(idx[oks_nms(pred[idx], score[idx], areas[idx])])
    keep = np.sort(np.array(keep, dtype=np.int64))
    # oracle: per person, the candidate of its scene whose pose fits it best
    inst, _ = pose_oks(pred, scenes, c["scene"])
    oracle = []
    for s in np.unique(scene):
        idx = np.flatnonzero(scene == s)
        for q in np.flatnonzero(scenes.people["on"][s].numpy()):
            oracle.append(idx[inst[idx, q].argmax()])
    oracle = np.unique(np.array(oracle, dtype=np.int64))
    out = _select_metrics(scenes, coco_gt, pred, conf, score, keep)
    out.update({f"oracle_{k}": v for k, v in
                _select_metrics(scenes, coco_gt, pred, conf, score, oracle).items()})
    return out


def evaluate_candidates(model, mode: str, scenes: Scenes, cfg: DataConfig = DataConfig(),
                        decoder: str = "mmpose", keypoint_score_thr=KEYPOINT_SCORE_THR,
                        device=torch.device("cpu"), coco_gt=None) -> dict:
    """Predicts every candidate crop of ``scenes`` with ``model`` (train.predict, ``decoder``)
    and scores them by the protocol (``score_candidates``)."""
    from bench.train import predict
    pred, conf = predict(model, mode, scenes.candidates["images"], cfg, decoder, device)
    return score_candidates(scenes, pred, conf, keypoint_score_thr, coco_gt)


# ----------------------------------------------------------------------------- checkpoints

KEY = re.compile(r"(?P<loss>\w+?)(?:\[(?P<opts>[^\]]*)\])?@(?P<lr>[^@\[\]]+)")


def parse_key(key: str):
    """A checkpoint's variant key (train.Variant.key, e.g. ``rspose[pos_thr=0.5]@0.01``) ->
    train.Variant."""
    from bench.train import variant
    m = KEY.fullmatch(key)
    if m is None:
        raise ValueError(f"not a variant key: {key!r}")
    opts = {}
    for item in filter(None, (m["opts"] or "").split(",")):
        name, _, value = item.partition("=")
        try:
            opts[name] = float(value)
        except ValueError:
            opts[name] = value
    return variant(m["loss"], float(m["lr"]), **opts)


def find_checkpoints(root: Path, stage: str, variants=None, seeds=None):
    """[(seed, key, path)] under ``root/stage/<seed>/<key>.pt``, sorted."""
    found = []
    for path in sorted((Path(root) / stage).glob("*/*.pt")):
        try:
            seed = int(path.parent.name)
        except ValueError:
            continue
        key = path.stem
        if (seeds is None or seed in seeds) and (variants is None or key in variants):
            found.append((seed, key, path))
    return sorted(found, key=lambda t: (t[1], t[0]))


def evaluate_checkpoint(path, seed, key, budget, cfg, val, val_gt, scenes, scenes_gt, env,
                        device=torch.device("cpu"), decoders=None) -> list[dict]:
    """Rows for one checkpoint: per decoder, the ground-truth protocol and the candidate
    protocol (and its oracle) at each keypoint score threshold."""
    from bench.train import predict_all
    from bench.train_losses import LOSSES
    from bench.train_models import build_model
    v = parse_key(key)
    mode = LOSSES[v.loss].mode
    model = build_model(mode, width=budget.width, seed=seed, cfg=cfg)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.to(device)
    columns = dict(v.columns(), variant=key)      # the file's key, as the sweep wrote it
    base = dict(env, **columns, seed=seed, loss=v.loss, mode=mode,
                step=budget.steps, steps=budget.steps, batch=budget.batch, lr=v.lr,
                width=budget.width, input=cfg.input_label)
    rows = []
    decoders = tuple(decoders or train_eval.DECODERS)
    t0 = time.perf_counter()
    on_val = predict_all(model, mode, val["images"], cfg, decoders, device)
    on_crops = predict_all(model, mode, scenes.candidates["images"], cfg, decoders, device)
    for decoder in decoders:
        pred, conf = on_val[decoder]
        m = train_eval.evaluate(pred, conf, val_gt, val)
        rows.append(dict(base, decoder=decoder, protocol="gt", val_size=val["images"].shape[0],
                         load_avg=load_avg(), elapsed_s=round(time.perf_counter() - t0, 2),
                         **m))
        pred, conf = on_crops[decoder]
        for name, thr in THRESHOLDS.items():
            m = score_candidates(scenes, pred, conf, thr, scenes_gt)
            for proto, prefix in ((f"candidates-{name}", ""), (f"candidates-oracle-{name}",
                                                                "oracle_")):
                rows.append(dict(base, decoder=decoder, protocol=proto, val_size=len(scenes),
                                 PCK="", load_avg=load_avg(),
                                 elapsed_s=round(time.perf_counter() - t0, 2),
                                 **{k: m[prefix + k] for k in ("AP", "AP50", "AP75", "rho_kpt",
                                                               "rho_inst", "OKS")}))
    return rows


# ----------------------------------------------------------------------------- summary

def summary(rows) -> str:
    """Markdown: per variant and decoder, AP and ρ inst under each protocol (mean ± sd over
    seeds)."""
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[(r["variant"], r["mode"], r["decoder"])][r["protocol"]].append(r)
    head = ["variant", "mode", "decoder", "seeds"] + [f"AP {p}" for p in protocols] \
        + [f"ρ inst {p}" for p in protocols if "oracle" not in p]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (key, mode, decoder), by in sorted(groups.items(), key=lambda t: (t[0][1], t[0][0],
                                                                           t[0][2])):
        seeds = len({r["seed"] for rs in by.values() for r in rs})
        cells = [key, mode, decoder, str(seeds)]
        cells += [mean_sd([as_number(r["AP"]) for r in by.get(p, [])]) for p in protocols]
        cells += [mean_sd([as_number(r["rho_inst"]) for r in by.get(p, [])], 2) for p in protocols
                  if "oracle" not in p]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_rows(csv_path, run: str):
    """The rows of ``run``; the latest of each (variant, seed, decoder, protocol) wins."""
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["run"] == run]
    latest = {}
    for r in rows:
        latest[(r["variant"], r["seed"], r["decoder"], r["protocol"], r["input"])] = r
    return list(latest.values())


# ----------------------------------------------------------------------------- driver

def main(argv=None) -> int:
    from bench.train import FIELDS, RESULTS
    from bench.train_sweep import DEFAULT_CKPT, LARGE, stage_budget
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index("    python"):])
    ap.add_argument("--stage", choices=("lr", "ablate", "confirm", "large"))
    ap.add_argument("--summary", metavar="STAGE", help="print a stage's table from the CSV")
    ap.add_argument("--variants", help="comma list of variant keys (default: all found)")
    ap.add_argument("--seeds", help="comma list of integers (default: all found)")
    ap.add_argument("--checkpoints", type=Path, default=DEFAULT_CKPT,
                    help="root of <stage>/<seed>/<key>.pt (default: %(default)s)")
    ap.add_argument("--quick", action="store_true",
                    help="the checkpoints come from train_sweep.py --quick (steps, batch)")
    ap.add_argument("--scenes", type=int, default=VAL_SCENES, help="validation scenes")
    ap.add_argument("--val-size", type=int, default=VAL_SIZE,
                    help="ground-truth protocol samples (default %(default)s, as train.py)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--csv", type=Path, default=RESULTS)
    ap.add_argument("--no-csv", action="store_true")
    ap.add_argument("--decoders", help="comma list (default: train_eval.DECODERS; also "
                                       "train_eval.SCORE_DECODERS)")
    args = ap.parse_args(argv)
    if args.stage is None and args.summary is None:
        ap.error("give --stage or --summary")
    if args.summary:
        print(summary(read_rows(args.csv, f"protocols-{args.summary}")))
        return 0
    torch.set_num_threads(args.threads)
    from tqdm import tqdm

    # the keys hold commas inside their brackets: split on commas outside them
    variants = None if not args.variants else set(re.findall(r"[^,\[]+(?:\[[^\]]*\])?@[^,]+",
                                                             args.variants))
    seeds = None if not args.seeds else {int(s) for s in args.seeds.split(",")}
    found = find_checkpoints(args.checkpoints, args.stage, variants, seeds)
    if not found:
        print(f"no checkpoints under {args.checkpoints / args.stage}", file=sys.stderr)
        return 1
    budget = stage_budget(args.stage, args.quick)
    cfg = LARGE if args.stage == "large" else DataConfig()
    device = torch.device(args.device)
    run = f"protocols-{args.stage}" + ("-quick" if args.quick else "")
    env = environment(args.device, run, torch.float32)
    env.update(rspose_kernels=rk.__version__, pycocotools=package_version("pycocotools"),
               threads=torch.get_num_threads())
    decoders = tuple(args.decoders.split(",")) if args.decoders else train_eval.DECODERS
    bad = [d for d in decoders if d not in train_eval.DECODERS + train_eval.SCORE_DECODERS]
    if bad:
        ap.error(f"--decoders: unknown {bad}")
    t0 = time.perf_counter()
    val = validation_set(args.val_size, cfg)
    val_gt = train_eval.coco_ground_truth(val["keypoints"], val["visible"], val["box"],
                                          val["area"])
    scenes = make_scenes(args.scenes, cfg)
    scenes_gt = _coco(scene_ground_truth(scenes))
    print(f"# train_protocols {args.stage}: {len(found)} checkpoints; {args.val_size} "
          f"ground-truth crops; {len(scenes)} scenes, {int(scenes.people['on'].sum())} people, "
          f"{len(scenes.candidates['scene'])} candidate crops (made in "
          f"{time.perf_counter() - t0:.1f} s); decoders {list(decoders)}; "
          f"{env['threads']} threads", flush=True)
    rows = []
    for seed, key, path in tqdm(found, desc="checkpoints", file=sys.stderr,
                                mininterval=0.5 if sys.stderr.isatty() else 30):
        try:
            part = evaluate_checkpoint(path, seed, key, budget, cfg, val, val_gt, scenes,
                                       scenes_gt, env, device, decoders)
        except (RuntimeError, EOFError, OSError) as exc:   # e.g. a file the sweep is writing
            print(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        rows += part
        if not args.no_csv:
            append_csv(args.csv, part, FIELDS)       # an interrupted run keeps what it did
    print(summary(rows))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s"
          + ("" if args.no_csv else f"; rows appended to {args.csv}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
