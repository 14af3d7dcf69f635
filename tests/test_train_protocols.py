"""bench/train_scenes.py and bench/train_protocols.py: the scenes, the crop geometry, mmpose's
rescoring and OKS-NMS, and the candidate-box protocol end to end."""
import csv

import numpy as np
import pytest
import torch

from bench import train_data as td
from bench import train_protocols as tp
from bench import train_scenes as ts
from bench.train_models import build_model

CFG = td.DataConfig()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # rendering is many small tensor ops: on a busy 2-core machine, 2 threads made it ~6×
    # slower than 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scenes():
    return ts.make_scenes(6, CFG, seed=11)


@pytest.fixture(scope="module")
def geometry():
    """Scenes without images, and a crop of every person at its own box (padded 1.25, the
    training crop's geometry at scale 1, no shift)."""
    sc = ts.make_scenes(16, CFG, seed=12, render=False)
    s, p = sc.people["on"].nonzero(as_tuple=True)
    centre, scale = ts.box_to_centre_scale(sc.people["box"][s, p], CFG)
    return sc, s, p, centre, scale


def perfect_predictions(sc):
    """Each person candidate predicts its person exactly, confidence 1; each false positive
    predicts every keypoint at its crop's centre, confidence 0."""
    c = sc.candidates
    n = c["scene"].shape[0]
    pred = torch.full((n, td.K, 2), 0.0)
    pred[:] = torch.tensor([(CFG.width - 1) / 2, (CFG.height - 1) / 2])
    conf = torch.zeros(n, td.K)
    m = c["person"] >= 0
    kp, _ = ts.crop_targets(sc, c["scene"][m], c["person"][m], c["centre"][m], c["scale"][m])
    pred[m], conf[m] = kp.float(), 1.0
    return pred, conf


def test_scenes_are_a_function_of_the_seed(scenes):
    again = ts.make_scenes(6, CFG, seed=11)
    for group in ("people", "segments", "occluders", "background", "candidates"):
        for key, value in getattr(scenes, group).items():
            assert torch.equal(value, getattr(again, group)[key]), (group, key)
    other = ts.make_scenes(6, CFG, seed=13, render=False)
    assert not torch.equal(other.people["keypoints"], scenes.people["keypoints"])
    c = scenes.candidates
    assert c["images"].shape == (c["scene"].shape[0], 3, CFG.height, CFG.width)
    on = scenes.people["on"].sum(1)
    assert on.min() >= 1 and on.max() <= ts.MAX_PEOPLE
    # every person has candidates, the lightly jittered first among them; false positives
    # score lower than people's boxes on average
    for s in range(len(scenes)):
        for q in scenes.people["on"][s].nonzero()[:, 0].tolist():
            k = ((c["scene"] == s) & (c["person"] == q)).sum()
            assert ts.CANDIDATES[0] <= k <= ts.CANDIDATES[1]
    assert c["box_score"][c["person"] < 0].mean() < c["box_score"][c["person"] >= 0].mean()
    assert ((c["box_score"] > 0) & (c["box_score"] <= 1)).all()


def test_box_to_crop_follows_mmpose():
    # padding 1.25, then the short side grown to 3:4
    centre, scale = ts.box_to_centre_scale(torch.tensor([[10.0, 20.0, 30.0, 80.0],
                                                         [0.0, 0.0, 90.0, 40.0]]), CFG)
    assert centre.tolist() == [[25.0, 60.0], [45.0, 20.0]]
    assert scale.tolist() == [[75.0, 100.0], [112.5, 150.0]]


def test_crop_scene_round_trip():
    g = torch.Generator().manual_seed(0)
    centre = torch.rand(5, 2, generator=g, dtype=torch.float64) * 100
    scale = torch.rand(5, 1, generator=g, dtype=torch.float64) * 60 + 20
    scale = torch.cat([scale * 0.75, scale], 1)
    pts = torch.rand(5, td.K, 2, generator=g, dtype=torch.float64) * 128
    crop = ts.to_crop(pts, centre, scale, CFG)
    torch.testing.assert_close(ts.to_scene(crop, centre, scale, CFG), pts, rtol=0, atol=1e-10)
    # train_data's pixel convention: the crop spans [-0.5, W - 0.5] around its centre
    edges = torch.tensor([[-0.5, -0.5], [CFG.width - 0.5, CFG.height - 0.5],
                          [(CFG.width - 1) / 2, (CFG.height - 1) / 2]], dtype=torch.float64)
    back = ts.to_scene(edges.expand(5, 3, 2), centre, scale, CFG)
    torch.testing.assert_close(back[:, 0], centre - scale / 2)
    torch.testing.assert_close(back[:, 1], centre + scale / 2)
    torch.testing.assert_close(back[:, 2], centre)


def test_crop_at_the_training_geometry_looks_like_training_data(geometry):
    sc, s, p, centre, scale = geometry
    kp, vis = ts.crop_targets(sc, s, p, centre, scale)
    # every keypoint inside, the person about as large in the crop as in training
    assert ((kp >= -0.5) & (kp <= torch.tensor([CFG.width - 0.5, CFG.height - 0.5]))).all()
    extent = (kp.max(1).values - kp.min(1).values) / torch.tensor([CFG.width, CFG.height])
    assert 0.5 < extent.max(1).values.median() < 0.85
    # visibility by train_data's rules: turned-away keypoints are labelled 1, some others are
    # covered, most are visible
    hidden = sc.people["hidden"][s, p]
    assert (vis[hidden] == 1).all()
    assert 0.03 < (vis == 1).float().mean() < 0.4
    # the pixels: statistics like the training images', and a visible keypoint shows its
    # marker's colour where a hidden one mostly does not
    img = ts.render_crops(sc, s, centre, scale)
    train = td.make_batch(0, 0, 64, CFG)["images"]
    assert abs(img.mean() - train.mean()) < 0.15 and abs(img.std() - train.std()) < 0.15
    r = kp.round().long()
    at = img.permute(0, 2, 3, 1)[torch.arange(len(s))[:, None], r[..., 1], r[..., 0]]
    err = (at * 0.25 + 0.5 - td.KEYPOINT_COLOURS).abs().amax(-1)
    assert err[vis == 2].median() < 0.1 < err[vis == 1].median()


def test_overlapping_crops_see_the_same_scene(scenes):
    # two crops one scene pixel per crop pixel, 6 and 9 pixels apart: where they overlap,
    # the same pixels (background field, grain, noise, people, occluders)
    frame = torch.tensor([CFG.width, CFG.height], dtype=torch.float32)
    centre = torch.tensor([[60.5, 62.5], [66.5, 71.5]])
    img = ts.render_crops(scenes, torch.tensor([0, 0]), centre, frame.expand(2, 2))
    torch.testing.assert_close(img[0, :, 9:, 6:], img[1, :, :-9, :-6], rtol=0, atol=1e-5)


def test_rescoring_is_mmposes_rule():
    box = np.array([0.8, 0.5, 1.0])
    kpt = np.array([[0.1, 0.3, 0.5, 0.2],      # 0.2 is not above 0.2: mean of 0.3, 0.5
                    [0.1, 0.0, 0.2, -1.0],     # none above: 0
                    [0.9, 0.9, 0.9, 0.9]])

    def mmpose(bbox_score, scores, thr):       # CocoMetric.compute_metrics, transcribed
        mean_kpt_score, valid_num = 0, 0
        for s in scores:
            if s > thr:
                mean_kpt_score += s
                valid_num += 1
        if valid_num != 0:
            mean_kpt_score /= valid_num
        return bbox_score * mean_kpt_score

    got = tp.rescore(box, kpt, 0.2)
    np.testing.assert_allclose(got, [0.8 * 0.4, 0.0, 0.9])
    np.testing.assert_allclose(got, [mmpose(b, k, 0.2) for b, k in zip(box, kpt)])
    np.testing.assert_allclose(tp.rescore(box, kpt, None), box * kpt.mean(1))


def test_oks_nms_keeps_the_best_of_duplicates_and_distinct_people():
    pose = np.random.default_rng(0).uniform(20, 60, (td.K, 2))
    poses = np.stack([pose, pose + 0.3, pose + [50.0, 0.0]])
    scores = np.array([0.6, 0.9, 0.5])
    areas = np.full(3, 2000.0)
    assert tp.oks_nms(poses, scores, areas).tolist() == [1, 2]
    assert tp.oks_iou(pose, poses[1:2], 2000.0, areas[1:2])[0] > 0.9
    # nothing to suppress at a threshold of 1; everything but the best at 0
    assert sorted(tp.oks_nms(poses, scores, areas, thr=1.0).tolist()) == [0, 1, 2]
    assert tp.oks_nms(poses, scores, areas, thr=0.0).tolist() == [1]


def test_a_perfect_predictor_scores_ap_1(geometry):
    sc = geometry[0]
    pred, conf = perfect_predictions(sc)
    m = tp.score_candidates(sc, pred, conf, keypoint_score_thr=0.2)
    assert m["AP"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(1.0)
    assert m["oracle_AP"] == pytest.approx(1.0)
    assert m["oracle_detections"] == int(sc.people["on"].sum())
    assert m["oracle_OKS"] == pytest.approx(1.0)
    # NMS keeps one of each person's identical poses: the people, plus false positives
    c = sc.candidates
    n_people = int(sc.people["on"].sum())
    assert (c["person"] >= 0).sum() > n_people
    assert m["detections"] - n_people <= int((c["person"] < 0).sum())
    scene = c["scene"].numpy()
    score = tp.rescore(c["box_score"].numpy(), conf.numpy(), 0.2)
    pred_scene = ts.to_scene(pred.double(), c["centre"].double(), c["scale"].double(), CFG)
    for s in range(len(sc)):
        idx = np.flatnonzero(scene == s)
        keep = idx[tp.oks_nms(pred_scene[idx].numpy(), score[idx],
                              c["scale"][idx].double().prod(-1).numpy())]
        kept_people = c["person"][keep][c["person"][keep] >= 0]
        assert sorted(kept_people.tolist()) == sc.people["on"][s].nonzero()[:, 0].tolist()


def test_evaluate_candidates_runs_on_an_untrained_model(scenes):
    for mode in ("heatmap", "simcc"):
        model = build_model(mode, width=4, seed=0)
        m = tp.evaluate_candidates(model, mode, scenes, CFG, "mmpose", keypoint_score_thr=None)
        for key in ("AP", "AP50", "AP75", "OKS", "oracle_AP"):
            assert 0.0 <= m[key] <= 1.0, (mode, key)
        assert 0 < m["detections"] <= scenes.candidates["scene"].shape[0]


def test_variant_keys_parse():
    for key in ("mse@0.01", "rspose[pos_thr=0.5]@0.01", "kl@0.002",
                "rspose_simcc[pos_thr=0.011109]@0.005",
                "rspose[delta=0.25,pos_thr=0.5]@0.01", "rspose[pos_thr=0.5,scope=keypoint]@0.01"):
        assert tp.parse_key(key).key == key
    assert tp.parse_key("rspose[pos_thr=0.5]@0.01").columns()["pos_thr"] == 0.5


def test_cli_writes_rows_for_both_protocols(tmp_path, capsys):
    folder = tmp_path / "ckpt" / "lr" / "0"
    folder.mkdir(parents=True)
    budget = tp_budget()
    for key, mode in (("mse@0.01", "heatmap"), ("kl@0.01", "simcc")):
        torch.save(build_model(mode, width=budget.width, seed=0).state_dict(),
                   folder / f"{key}.pt")
    out = tmp_path / "train.csv"
    assert tp.main(["--stage", "lr", "--checkpoints", str(tmp_path / "ckpt"), "--scenes", "3",
                    "--val-size", "8", "--csv", str(out), "--variants", "mse@0.01,kl@0.01"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    from bench import train, train_eval
    assert set(rows[0]) == set(train.FIELDS)
    protocols = {"gt", "candidates-thr0.2", "candidates-nothr", "candidates-oracle-thr0.2",
                 "candidates-oracle-nothr"}
    assert len(rows) == 2 * len(train_eval.DECODERS) * len(protocols)
    assert {r["protocol"] for r in rows} == protocols
    assert {(r["variant"], r["mode"]) for r in rows} == {("mse@0.01", "heatmap"),
                                                         ("kl@0.01", "simcc")}
    assert all(r["run"] == "protocols-lr" and r["lr"] == "0.01" for r in rows)
    table = capsys.readouterr().out
    assert "AP candidates-thr0.2" in table and "kl@0.01" in table


def tp_budget():
    from bench.train_sweep import stage_budget
    return stage_budget("lr", quick=False)
