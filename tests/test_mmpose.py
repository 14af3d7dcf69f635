"""rspose_kernels.integrations.mmpose: registration into mmpose's MODELS registry.

Three layers:
- always: the registration code path against a small fake ``mmpose.registry`` injected
  through sys.modules, and the import without mmpose;
- where mmpose imports (mmpose + mmengine + mmcv-lite are enough): the real registry and an
  mmengine config file with ``custom_imports``;
- mmpose's own HeatmapHead and SimCCHead built through MODELS from config dicts, training
  through RSPoseLoss. ``mmpose.models`` imports mmcv's compiled ops (``mmcv._ext``), which
  mmcv-lite lacks and full mmcv builds from source for tens of minutes; these heads never
  call them, so under mmcv-lite a stand-in ``mmcv._ext`` whose functions raise is put in
  sys.modules (set RSPOSE_REQUIRE_MMPOSE_MODELS=1 to demand the real ops instead).
Set RSPOSE_REQUIRE_MMPOSE=1 to turn the skips into failures, as in the environment
scripts/install_mmpose.sh makes.
"""
import importlib
import importlib.util
import os
import sys
import types

import numpy as np
import pytest
import torch

import rspose_kernels.integrations.mmpose as integration
from rspose_kernels.pose import RSPoseLoss
from rspose_kernels.testing import heatmap_case, simcc_case


def _optional(module, env):
    """Import ``module`` or skip, or fail when the environment variable ``env`` is set."""
    try:
        return importlib.import_module(module)
    except Exception as exc:   # mmpose raises ImportError or AssertionError (mmcv version)
        if os.environ.get(env) == "1":
            pytest.fail(f"{env}=1 but {module} does not import: {type(exc).__name__}: {exc}")
        pytest.skip(f"{module} does not import here ({type(exc).__name__}: {exc}); "
                    f"scripts/install_mmpose.sh makes an environment where it does")


# ----------------------------------------------------------------------------- fake mmpose

class FakeRegistry:
    """The part of mmengine.Registry the integration uses, with its duplicate-name rule."""

    def __init__(self):
        self._modules = {}

    @property
    def module_dict(self):
        return self._modules

    def register_module(self, name=None, force=False, module=None):
        name = name or module.__name__
        if not force and name in self._modules:
            raise KeyError(f"{name} is already registered")
        self._modules[name] = module
        return module

    def build(self, cfg):
        cfg = dict(cfg)
        return self._modules[cfg.pop("type")](**cfg)


@pytest.fixture
def reload_integration(monkeypatch):
    """Reload the integration under patched sys.modules, then reload it for real."""
    with monkeypatch.context() as mp:
        def reload_with(modules):
            for name, mod in modules.items():
                mp.setitem(sys.modules, name, mod)
            return importlib.reload(integration)
        yield reload_with
    importlib.reload(integration)


def _fake_mmpose():
    registry = FakeRegistry()
    pkg = types.ModuleType("mmpose")
    pkg.__path__ = []
    sub = types.ModuleType("mmpose.registry")
    sub.MODELS = registry
    pkg.registry = sub
    return registry, {"mmpose": pkg, "mmpose.registry": sub}


def test_registers_into_the_registry(reload_integration):
    registry, modules = _fake_mmpose()
    mod = reload_integration(modules)
    assert mod.MMPOSE_AVAILABLE and mod.MMPOSE_IMPORT_ERROR is None
    assert mod.MODELS is registry and registry.module_dict["RSPoseLoss"] is RSPoseLoss
    # Importing twice (importlib.reload, or two configs' custom_imports) is harmless.
    importlib.reload(mod)
    assert registry.module_dict["RSPoseLoss"] is RSPoseLoss
    # What a config dict builds is the package's loss, with mmpose's call convention.
    loss = registry.build(dict(type="RSPoseLoss", use_target_weight=True, loss_weight=2.0,
                               instance_weight=0.5))
    heat, target, weight = heatmap_case(2, 17, 8, 6, 2.0, seed=60)
    expected = RSPoseLoss(loss_weight=2.0, instance_weight=0.5)(heat, target, weight)
    assert loss(heat, target, weight).item() == expected.item()


def test_a_different_class_under_the_name_is_an_error(reload_integration):
    registry, modules = _fake_mmpose()
    registry.register_module(name="RSPoseLoss", module=object)
    with pytest.raises(KeyError, match="RSPoseLoss"):
        reload_integration(modules)


def test_imports_without_mmpose(reload_integration):
    # None in sys.modules makes `import mmpose` raise ImportError, as if it were not installed.
    mod = reload_integration({"mmpose": None, "mmpose.registry": None})
    assert not mod.MMPOSE_AVAILABLE and mod.MODELS is None
    assert "mmpose" in mod.MMPOSE_IMPORT_ERROR
    assert mod.RSPoseLoss is RSPoseLoss


# ----------------------------------------------------------------------------- real mmpose

def test_real_registry():
    registry = _optional("mmpose.registry", "RSPOSE_REQUIRE_MMPOSE")
    mod = importlib.reload(integration)
    assert mod.MMPOSE_AVAILABLE, mod.MMPOSE_IMPORT_ERROR
    assert registry.MODELS.module_dict["RSPoseLoss"] is RSPoseLoss


def test_real_config_with_custom_imports(tmp_path):
    _optional("mmpose.registry", "RSPOSE_REQUIRE_MMPOSE")
    from mmengine.config import Config
    path = tmp_path / "rspose_cfg.py"
    path.write_text(
        "custom_imports = dict(imports=['rspose_kernels.integrations.mmpose'],\n"
        "                      allow_failed_imports=False)\n"
        "loss = dict(type='RSPoseLoss', instance_weight=0.5, use_target_weight=True,\n"
        "            loss_weight=1.0, delta=0.5, backend='torch')\n")
    cfg = Config.fromfile(str(path))   # imports custom_imports, as mmpose's tools do
    assert "rspose_kernels.integrations.mmpose" in sys.modules
    assert cfg.loss.type == "RSPoseLoss"
    from mmpose.registry import MODELS
    cls = MODELS.module_dict[cfg.loss.type]
    options = {k: v for k, v in cfg.loss.items() if k != "type"}
    assert cls is RSPoseLoss and isinstance(cls(**options), RSPoseLoss)


def _mmcv_ops_standin():
    ext = types.ModuleType("mmcv._ext")
    ext.__doc__ = "rspose-kernels test stand-in for mmcv's compiled ops (mmcv-lite has none)"

    def missing(name):
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*args, **kwargs):
            raise RuntimeError(f"mmcv._ext.{name}: a test stand-in; install full mmcv")
        return op

    ext.__getattr__ = missing   # every op name mmcv.ops checks for "exists"
    return ext


def _models():
    _optional("mmpose.registry", "RSPOSE_REQUIRE_MMPOSE")
    if "mmcv._ext" not in sys.modules and importlib.util.find_spec("mmcv._ext") is None:
        if os.environ.get("RSPOSE_REQUIRE_MMPOSE_MODELS") == "1":
            pytest.fail("RSPOSE_REQUIRE_MMPOSE_MODELS=1 but mmcv has no compiled ops "
                        "(mmcv-lite?): MMPOSE_FULL_MMCV=1 bash scripts/install_mmpose.sh")
        sys.modules.setdefault("mmcv._ext", _mmcv_ops_standin())
    _optional("mmpose.models", "RSPOSE_REQUIRE_MMPOSE")
    importlib.import_module("rspose_kernels.integrations.mmpose")
    from mmpose.registry import MODELS
    return MODELS


def _samples(fields):
    from mmengine.structures import InstanceData, PixelData
    from mmpose.structures import PoseDataSample
    samples = []
    for i in range(fields["keypoint_weights"].shape[0]):
        sample = PoseDataSample()
        labels = InstanceData()
        labels.keypoint_weights = fields["keypoint_weights"][i:i + 1]
        for name in ("keypoint_x_labels", "keypoint_y_labels"):
            if name in fields:
                setattr(labels, name, fields[name][i:i + 1])
        sample.gt_instance_labels = labels
        if "heatmaps" in fields:
            sample.gt_fields = PixelData(heatmaps=fields["heatmaps"][i])
        samples.append(sample)
    return samples


def test_real_heatmap_head_trains_with_rspose_loss():
    MODELS = _models()
    b, k, h, w = 2, 17, 16, 12
    _, target, weight = heatmap_case(b, k, h, w, 2.0, seed=61)
    head = MODELS.build(dict(
        type="HeatmapHead", in_channels=8, out_channels=k, deconv_out_channels=None,
        loss=dict(type="RSPoseLoss", use_target_weight=True, instance_weight=1.0,
                  backend="torch"),
        decoder=dict(type="MSRAHeatmap", input_size=(w * 4, h * 4), heatmap_size=(w, h),
                     sigma=2)))
    assert isinstance(head.loss_module, RSPoseLoss)
    feats = (torch.randn(b, 8, h, w, generator=torch.Generator().manual_seed(62)),)
    losses = head.loss(feats, _samples(dict(heatmaps=target, keypoint_weights=weight)),
                       train_cfg={})
    expected = RSPoseLoss(backend="torch")(head.forward(feats), target, weight)
    torch.testing.assert_close(losses["loss_kpt"], expected)
    assert_same_parameter_gradients(head, losses["loss_kpt"], expected)


def assert_same_parameter_gradients(head, loss, expected):
    """The head's loss back-propagates what RSPoseLoss on its output does (mmpose passes the
    targets and weights through unchanged), into every parameter, and not zero."""
    params = [p for p in head.parameters() if p.requires_grad]
    want = torch.autograd.grad(expected, params)
    loss.backward()
    for p, w in zip(params, want):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, w, rtol=1e-5, atol=1e-8)
    # (a bias may get exactly 0: the identity-update gradient of a row sums to zero)
    assert all(w.abs().sum() > 0 for p, w in zip(params, want) if p.dim() > 1)


def _check_simcc_head(head_type, seed, **head_options):
    """A SimCC-style head built through MODELS with RSPoseLoss(mode='simcc'): its loss is
    RSPoseLoss on its output, and so are its parameter gradients."""
    MODELS = _models()
    b, k, h, w = 2, 17, 8, 6
    ratio = 2.0
    (_, _), (gx, gy), weight = simcc_case(b, k, int(w * 4 * ratio), int(h * 4 * ratio), 4.0,
                                          seed=seed)
    head = MODELS.build(dict(
        type=head_type, in_channels=8, out_channels=k, input_size=(w * 4, h * 4),
        in_featuremap_size=(w, h), simcc_split_ratio=ratio,
        loss=dict(type="RSPoseLoss", mode="simcc", use_target_weight=True, backend="torch"),
        **head_options))
    assert isinstance(head.loss_module, RSPoseLoss)
    feats = (torch.randn(b, 8, h, w, generator=torch.Generator().manual_seed(seed + 1)),)
    samples = _samples(dict(keypoint_x_labels=gx, keypoint_y_labels=gy, keypoint_weights=weight))
    losses = head.loss(feats, samples, train_cfg={})
    expected = RSPoseLoss(mode="simcc", backend="torch")(head.forward(feats), (gx, gy), weight)
    torch.testing.assert_close(losses["loss_kpt"], expected)
    assert_same_parameter_gradients(head, losses["loss_kpt"], expected)


def test_real_simcc_head_trains_with_rspose_loss():
    _check_simcc_head("SimCCHead", 63, deconv_out_channels=None, decoder=dict(
        type="SimCCLabel", input_size=(24, 32), smoothing_type="gaussian", sigma=4.0,
        simcc_split_ratio=2.0))


def test_real_rtmcc_head_trains_with_rspose_loss():
    """RTMPose's head (GAU over the keypoint tokens, then x / y bin logits), as in
    rtmpose-*_coco configs, trained through RSPoseLoss(mode='simcc')."""
    _check_simcc_head(
        "RTMCCHead", 65, final_layer_kernel_size=3,
        gau_cfg=dict(hidden_dims=16, s=8, expansion_factor=2, dropout_rate=0.0, drop_path=0.0,
                     act_fn="SiLU", use_rel_bias=False, pos_enc=False),
        decoder=dict(type="LogitSimCCLabel", input_size=(24, 32), smoothing_type="gaussian",
                     sigma=(4.0, 4.0), simcc_split_ratio=2.0))


# ----------------------------------------------------------------------------- codecs

def _codecs():
    _optional("mmpose.codecs", "RSPOSE_REQUIRE_MMPOSE")
    mod = importlib.import_module("rspose_kernels.integrations.mmpose")
    assert mod.CODECS_AVAILABLE, mod.CODECS_IMPORT_ERROR
    from mmpose.registry import KEYPOINT_CODECS
    return KEYPOINT_CODECS


INPUT = (192, 256)          # (w, h), mmpose's 256x192 configs
HEATMAP = (48, 64)
# Off-grid joints (input pixels), one near a border, for 3 keypoints of one instance.
JOINTS = np.array([[[80.3, 120.6], [141.7, 33.2], [3.0, 250.0]]], dtype=np.float32)


def _logits(encoded, level):
    """A logit head's output for the codec's own target: a sharper peak, its level free.
    Ranking losses fix differences within a row, never the level: ``level`` is the peak."""
    return (6.0 * encoded + level - 6.0).astype(np.float32)


@pytest.mark.parametrize("stock,options", [("MSRAHeatmap", {}),
                                            ("MSRAHeatmap", {"unbiased": True}),
                                            ("UDPHeatmap", {})])
def test_logit_heatmap_codecs_decode_negative_maxima(stock, options):
    registry = _codecs()
    cfg = dict(input_size=INPUT, heatmap_size=HEATMAP, sigma=2, **options)
    stock_codec = registry.build(dict(cfg, type=stock))
    codec = registry.build(dict(cfg, type="Logit" + stock))
    assert isinstance(codec, type(stock_codec))
    target = stock_codec.encode(JOINTS)["heatmaps"]
    # the encoding is the stock codec's (same targets for the data pipeline)
    np.testing.assert_array_equal(codec.encode(JOINTS)["heatmaps"], target)
    logits = _logits(target, level=-1.25)
    assert (logits.reshape(3, -1).max(-1) < 0).all()

    # The stock decoder loses every keypoint whose maximum is <= 0 (mmpose's -1 rule) ...
    bad, bad_scores = stock_codec.decode(logits)
    assert (bad[0] < 0).all() and (np.linalg.norm(bad[0] - JOINTS[0], axis=-1) > 9).all(), bad
    assert (bad_scores <= 0).all()
    # ... the logit codec decodes it where the argmax is, refined, and scores it > 0.
    kpts, scores = codec.decode(logits)
    assert kpts.shape == (1, 3, 2) and scores.shape == (1, 3)
    assert np.isfinite(kpts).all()
    scale = np.asarray(stock_codec.scale_factor, dtype=np.float32)
    argmax = np.stack(np.unravel_index(logits.reshape(3, -1).argmax(-1), logits.shape[1:]),
                      -1)[:, ::-1] * scale
    assert (np.abs(kpts[0] - argmax) <= scale + 1e-4).all()   # at most one heatmap pixel
    # Where the target's Gaussian is centred: plain MSRAHeatmap rounds the joint to the
    # heatmap grid; unbiased (DARK) and UDP encodings keep it off-grid.
    centre = JOINTS[0] if stock == "UDPHeatmap" or options else \
        np.floor(JOINTS[0] / scale + 0.5) * scale
    interior = [0, 1]   # the DARK step recovers the centre away from the border
    assert (np.abs(kpts[0, interior] - centre[interior]) < 0.1 * scale).all(), kpts
    if stock == "UDPHeatmap" or options:
        assert (np.abs(kpts[0, interior] - centre[interior])
                < np.abs(argmax[interior] - centre[interior])).all()
    assert (scores > 0).all()
    np.testing.assert_allclose(scores[0], np.log1p(np.exp(logits.reshape(3, -1).max(-1))),
                               rtol=1e-6)

    # Shifting the logits (a free level) moves no keypoint and raises every score.
    kpts_up, scores_up = codec.decode(logits + 5)
    np.testing.assert_allclose(kpts_up, kpts, atol=1e-4)
    assert (scores_up > scores).all()
    # The stock decoder is right only once the level happens to be positive.
    good, _ = stock_codec.decode(logits + 5)
    assert (np.abs(good[0] - kpts[0]) <= 2 * scale).all()


def test_logit_simcc_codec_decodes_negative_maxima():
    registry = _codecs()
    cfg = dict(input_size=INPUT, smoothing_type="gaussian", sigma=(4.9, 5.66),
               simcc_split_ratio=2.0, normalize=False)
    stock = registry.build(dict(cfg, type="SimCCLabel"))
    codec = registry.build(dict(cfg, type="LogitSimCCLabel"))
    enc = stock.encode(JOINTS)
    x = _logits(enc["keypoint_x_labels"][0], -2.0)
    y = _logits(enc["keypoint_y_labels"][0], -2.0)
    bad, _ = stock.decode(x, y)
    assert (bad[0] < 0).all()               # every keypoint "missing"
    kpts, scores = codec.decode(x, y)
    assert kpts.shape == (1, 3, 2) and np.isfinite(kpts).all()
    np.testing.assert_allclose(kpts[0, :2], JOINTS[0, :2], atol=0.3)
    np.testing.assert_allclose(scores, np.log1p(np.exp(-2.0)), rtol=1e-6)
    vis_codec = registry.build(dict(cfg, type="LogitSimCCLabel", decode_visibility=True))
    k2, (s2, vis) = vis_codec.decode(x, y)
    np.testing.assert_array_equal(k2, kpts)
    assert vis.shape == (1, 3)


def test_coco_metric_scores_logit_predictions():
    """mmpose's CocoMetric (score_mode='bbox_keypoint', OKS-NMS) on a two-person COCO-format
    ground truth: logit heatmaps decoded by LogitUDPHeatmap score AP 1; decoded by the stock
    UDPHeatmap (the README's two-line switch without the codec) they score 0."""
    registry = _codecs()
    _optional("mmpose.evaluation.metrics", "RSPOSE_REQUIRE_MMPOSE")
    from mmpose.evaluation.metrics import CocoMetric

    import rspose_kernels as rk

    rng = np.random.default_rng(67)
    k = 17
    joints = np.stack([rng.uniform([20, 20], [172, 236], size=(k, 2)) for _ in range(2)])
    cfg = dict(input_size=INPUT, heatmap_size=HEATMAP, sigma=2)
    stock = registry.build(dict(cfg, type="UDPHeatmap"))
    codec = registry.build(dict(cfg, type="LogitUDPHeatmap"))
    meta = dict(dataset_name="coco", num_keypoints=k, CLASSES=[dict(id=1, name="person")],
                sigmas=np.asarray(rk.COCO_SIGMAS, dtype=np.float32))

    def run(decoder):
        metric = CocoMetric(ann_file=None, score_mode="bbox_keypoint", keypoint_score_thr=0.2,
                            nms_mode="oks_nms", nms_thr=0.9)
        metric.dataset_meta = meta
        samples = []
        for i, person in enumerate(joints):
            target = stock.encode(person[None].astype(np.float32))["heatmaps"]
            kpts, scores = decoder.decode(_logits(target, level=-0.5))
            ann = dict(id=i + 1, image_id=i + 1, category_id=1, iscrowd=0, num_keypoints=k,
                       bbox=[0.0, 0.0, INPUT[0], INPUT[1]], area=float(INPUT[0] * INPUT[1]),
                       keypoints=np.concatenate([person, np.full((k, 1), 2.0)], 1)
                       .reshape(-1).tolist())
            samples.append(dict(id=i + 1, img_id=i + 1, category_id=1,
                                ori_shape=(INPUT[1], INPUT[0]), raw_ann_info=[ann],
                                gt_instances=dict(bbox_scores=np.ones(1)),
                                pred_instances=dict(keypoints=kpts, keypoint_scores=scores)))
        metric.process([], samples)
        return metric.compute_metrics(metric.results)

    good, bad = run(codec), run(stock)
    assert good["AP"] == pytest.approx(1.0), good
    assert bad["AP"] == pytest.approx(0.0), bad


def test_the_readme_mmpose_example(tmp_path):
    """The README's ViTPose config, read by mmengine over a stand-in of its base config (the
    real one's head: HeatmapHead, KeypointMSELoss, UDPHeatmap): it builds RSPoseLoss and a
    codec that decodes a logit heatmap whose maximum is negative to its joint."""
    registry = _codecs()
    from pathlib import Path

    from mmengine.config import Config
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b.split("```", 1)[0] for b in readme.split("```python")[1:]
                 if "LogitUDPHeatmap" in b and "_base_" in b)
    base = "td-hm_ViTPose-base_8xb64-210e_coco-256x192.py"
    assert base in block
    (tmp_path / base).write_text(
        "codec = dict(type='UDPHeatmap', input_size=(192, 256), heatmap_size=(48, 64), sigma=2)\n"
        "model = dict(type='TopdownPoseEstimator', head=dict(type='HeatmapHead',\n"
        "    in_channels=768, out_channels=17, deconv_out_channels=(256, 256),\n"
        "    deconv_kernel_sizes=(4, 4),\n"
        "    loss=dict(type='KeypointMSELoss', use_target_weight=True),\n"
        "    decoder=codec))\n")
    (tmp_path / "rspose.py").write_text(block)
    cfg = Config.fromfile(str(tmp_path / "rspose.py"))
    head = cfg.model.head
    assert head.loss.type == "RSPoseLoss" and "use_target_weight" in head.loss
    from mmpose.registry import MODELS
    loss = MODELS.module_dict[head.loss.type](**{k: v for k, v in head.loss.items()
                                                  if k != "type"})
    assert isinstance(loss, RSPoseLoss)
    codec = registry.build(head.decoder)
    assert type(codec).__name__ == "LogitUDPHeatmap"
    target = codec.encode(JOINTS)["heatmaps"]
    kpts, scores = codec.decode(_logits(target, level=-1.25))
    np.testing.assert_allclose(kpts[0, :2], JOINTS[0, :2], atol=0.4)
    assert (scores > 0).all()
