"""bench/train.py: the data generator, the COCO evaluator wrapper and a smoke run of every loss."""
import csv
import importlib.util

import pytest
import torch

from bench import train
from bench import train_data as td
from bench import train_eval as te
from bench.train_losses import LOSSES
from bench.train_models import build_model

CFG = td.DataConfig()


def test_data_is_a_function_of_seed_and_index():
    a = td.make_batch(3, 5, 6)
    b = td.make_batch(3, 5, 6)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    other = td.make_batch(3, 6, 6)
    assert not torch.equal(a["images"], other["images"])
    assert not torch.equal(a["keypoints"], td.make_batch(4, 5, 6)["keypoints"])
    assert a["images"].shape == (6, 3, CFG.height, CFG.width)
    assert a["keypoints"].shape == (6, td.K, 2)
    assert set(a["visible"].unique().tolist()) <= {1, 2}
    # train seeds never produce the validation stream
    val = td.validation_set(6)
    assert not torch.equal(val["images"], td.make_batch(0, 0, 6)["images"])


def test_data_has_hard_keypoints():
    # occluded / turned-away / out-of-frame keypoints exist, but most are visible
    b = td.make_batch(0, 0, 64)
    hidden = (b["visible"] == 1).float().mean().item()
    assert 0.03 < hidden < 0.4
    out = ((b["keypoints"] < -0.5) | (b["keypoints"] > torch.tensor(
        [CFG.width - 0.5, CFG.height - 0.5]))).any(-1)
    assert out.any()                                   # truncation happens
    assert torch.all(b["visible"][out] == 1)           # and is labelled hidden


def test_targets_follow_mmpose_codecs():
    kp = torch.tensor([[[10.2, 20.7], [-30.0, 5.0], [47.0, 63.0]]])
    vis = torch.tensor([[2, 1, 2]])
    hm, w = td.heatmap_targets(kp, vis, CFG)
    assert hm.shape == (1, 3, CFG.height // 2, CFG.width // 2)
    assert w.tolist() == [[1.0, 0.0, 1.0]]             # window off the heatmap: weight 0
    # int(x / stride + 0.5): (10.2, 20.7) -> (5, 10); unit peak there, (6σ+1)² window
    assert hm[0, 0, 10, 5] == 1.0
    assert (hm[0, 0] > 0).sum() == (6 * CFG.heatmap_sigma + 1) ** 2
    assert hm[0, 1].abs().sum() == 0
    (sx, sy), ws = td.simcc_targets(kp, vis, CFG)
    assert sx.shape == (1, 3, CFG.width * 2) and sy.shape == (1, 3, CFG.height * 2)
    assert ws.tolist() == [[1.0, 0.0, 1.0]]
    assert sx[0, 0].argmax() == 20 and sy[0, 0].argmax() == 41
    peak = 1 / (CFG.simcc_sigma * (2 * torch.pi) ** 0.5)
    torch.testing.assert_close(sx[0, 0].max(), torch.tensor(peak), rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def val():
    v = td.validation_set(48)
    return v, te.coco_ground_truth(v["keypoints"], v["visible"], v["box"], v["area"])


def test_evaluator_scores_ground_truth_as_perfect(val):
    v, gt = val
    conf = torch.rand(v["keypoints"].shape[:2], generator=torch.Generator().manual_seed(0))
    m = te.evaluate(v["keypoints"], conf, gt, v)
    assert m["AP"] == pytest.approx(1.0)
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(1.0)
    assert m["PCK"] == 1.0
    assert m["OKS"] == pytest.approx(1.0)


def test_evaluator_scores_shuffled_predictions_far_lower(val):
    v, gt = val
    perm = torch.roll(torch.arange(v["keypoints"].shape[0]), 1)
    conf = torch.ones(v["keypoints"].shape[:2])
    m = te.evaluate(v["keypoints"][perm], conf, gt, v)
    assert 0.0 <= m["AP"] < 0.2
    assert m["PCK"] < 0.3
    # small errors: high AP50 but lower AP75, and a confidence that tracks the error is
    # rewarded by a positive correlation
    noise = torch.randn(v["keypoints"].shape, generator=torch.Generator().manual_seed(1))
    scale = torch.rand(v["keypoints"].shape[:2], generator=torch.Generator().manual_seed(2))
    noisy = v["keypoints"] + 3 * scale[..., None] * noise
    m = te.evaluate(noisy, 1 - scale, gt, v)
    assert 0.0 < m["AP"] < 1.0
    assert m["rho_kpt"] > 0.3


def test_decoders_invert_the_targets():
    b = td.make_batch(1, 0, 8)
    inside = b["visible"] == 2
    hm, _ = td.heatmap_targets(b["keypoints"], b["visible"], CFG)
    xy, conf = te.decode_heatmaps(hm, CFG.heatmap_stride)
    err = (xy - b["keypoints"]).abs()[inside]
    assert err.max() <= 0.75 * CFG.heatmap_stride + 1e-4    # rounding, or an edge pixel
    (sx, sy), _ = td.simcc_targets(b["keypoints"], b["visible"], CFG)
    xy, conf = te.decode_simcc((sx, sy), CFG.simcc_split_ratio)
    err = (xy - b["keypoints"]).abs()[inside]
    assert err.max() <= 1 / CFG.simcc_split_ratio + 1e-4   # rounding, or an edge bin


@pytest.mark.parametrize("name", list(LOSSES))
def test_training_loss_falls(name):
    # A few steps on one fixed batch: every loss must make progress on what it sees.
    spec = LOSSES[name]
    # 40 steps: enough for every loss to clear the bound on every seed tried
    # (docs/MEASUREMENTS.md, "Smoke-training steps").
    budget = train.Budget(seeds=(0,), steps=40, batch=8, val_size=8, evals=1, width=8,
                          lr=3e-3, warmup=1)
    batch = td.make_batch(0, 0, 8)
    target, weight = train.targets_for(batch, CFG)[spec.mode]
    tr = train.Trainer(spec, build_model(spec.mode, width=8, seed=0), budget,
                       torch.device("cpu"))
    losses = [tr.step(batch["images"], target, weight) for _ in range(budget.steps)]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    # The ranking losses train by the identity update, not by descent on the value they
    # report, which may rise for a few steps first (RSPoseLoss(simcc) does, from its init).
    assert sum(losses[-3:]) / 3 < 0.97 * sum(losses[:3]) / 3, losses
    assert len(tr.step_ms) == budget.steps and all(0 <= x <= y for x, y in
                                                   zip(tr.loss_ms, tr.step_ms))


def test_smoke_run_writes_rows(tmp_path, capsys):
    out = tmp_path / "train.csv"
    png = tmp_path / "train.png"
    argv = ["--steps", "3", "--seeds", "0,1", "--batch", "4", "--val-size", "12", "--evals", "1",
            "--csv", str(out), "--no-progress", "--plot", str(png)]
    if importlib.util.find_spec("matplotlib") is None:
        with pytest.raises(ImportError, match="matplotlib"):
            train.main(argv)
    else:
        assert train.main(argv) == 0
        assert png.stat().st_size > 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(LOSSES) * len(te.DECODERS)
    assert set(rows[0]) == set(train.FIELDS)
    assert {r["decoder"] for r in rows} == set(te.DECODERS)
    # each loss at its best learning rate (bench/train_sweep.py measured them)
    assert {(r["loss"], float(r["lr"])) for r in rows} == {
        (n, train.BEST_LR[n]) for n in LOSSES}
    for r in rows:
        assert 0.0 <= float(r["AP"]) <= 1.0
        assert 0.0 <= float(r["PCK"]) <= 1.0
        assert r["seed"] in ("0", "1") and r["commit"] and r["device"]
        assert 0 < float(r["loss_share"]) < 1
    table = capsys.readouterr().out
    assert "RSPoseLoss(simcc)" in table and "AP50" in table


def test_loss_variants_build_what_they_say():
    import rspose_kernels as rk
    from bench.train_losses import build
    assert build("mse") is LOSSES["mse"]
    with pytest.raises(ValueError, match="mse"):
        build("mse", pos_thr=0.5)
    spec = build("rspose", pos_thr=0.5, delta=0.25, instance_weight=2.0)
    assert isinstance(spec.fn, rk.RSPoseLoss) and spec.mode == "heatmap"
    assert (spec.fn.pos_thr, spec.fn.delta, spec.fn.instance_weight) == (0.5, 0.25, 2.0)
    assert "τ 0.5" in spec.label
    simcc = build("rspose_simcc", pos_thr=0.3)
    assert simcc.fn.mode == "simcc" and simcc.fn.pos_thr == 0.3
    v = train.variant("rspose", 0.01, pos_thr=0.5)
    assert v.key == "rspose[pos_thr=0.5]@0.01" and v.columns()["pos_thr"] == 0.5
    assert train.variant("mse", 2e-3).key == "mse@0.002"


def test_keypoint_scope_ranks_each_keypoint_type_over_the_batch():
    """scope='keypoint': one row of B·H·W pixels per keypoint; weight-0 heatmaps leave it."""
    import rspose_kernels as rk
    from bench.train_losses import build
    b = td.make_batch(2, 0, 3)
    target, weight = td.heatmap_targets(b["keypoints"], b["visible"], CFG)
    weight[1, 4] = 0.0
    out = torch.randn(target.shape, generator=torch.Generator().manual_seed(71))
    spec = build("rspose", pos_thr=0.5, instance_weight=0.0, scope="keypoint")
    got = spec.fn(out, target, weight)
    keep = weight > 0
    want = []
    for k in range(target.shape[1]):
        rows = keep[:, k]
        want.append((out[rows, k].reshape(-1), target[rows, k].reshape(-1)))
    per_kpt = [rk.rank_sort_loss(s[None], t[None], pos_thr=0.5).loss for s, t in want]
    valid = [x for x, (_, t) in zip(per_kpt, want) if (t > 0.5).any()]
    torch.testing.assert_close(got, torch.stack(valid).mean())


def test_sweep_summary_pairs_by_seed():
    from bench import train_sweep as ts
    rows = []
    for seed, (mse, rs) in enumerate([(0.70, 0.72), (0.60, 0.65), (0.80, 0.79)]):
        for loss, key, lr, ap in (("mse", "mse@0.01", 0.01, mse),
                                  ("mse", "mse@0.002", 0.002, mse - 0.1),
                                  ("rspose", "rspose[pos_thr=0.5]@0.002", 0.002, rs)):
            rows.append(dict(variant=key, loss=loss, mode="heatmap", lr=str(lr), seed=str(seed),
                             AP=str(ap), PCK="0.5", rho_kpt="0.4", ms_step="10"))
    table = ts.summary(rows)
    line = next(li for li in table.splitlines() if li.startswith("| rspose"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # vs MSE at the same lr (0.002): +0.12, +0.15, +0.09; vs MSE at its best (0.01): +0.02, ...
    assert cells[-2].startswith("0.120 ± 0.030"), cells
    assert cells[-1].startswith("0.020 ± 0.030"), cells
    assert {v.loss for _, vs in ts.stage_variants("lr") for v in vs} == {
        "mse", "rspose", "kl", "rspose_simcc"}
    assert len([v for _, vs in ts.stage_variants("lr") for v in vs]) == 2 * 4 + 4 * (
        len(ts.TAUS) + len(ts.SIMCC_TAUS))
