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


def test_real_simcc_head_trains_with_rspose_loss():
    MODELS = _models()
    b, k, h, w = 2, 17, 8, 6
    ratio = 2.0
    (_, _), (gx, gy), weight = simcc_case(b, k, int(w * 4 * ratio), int(h * 4 * ratio), 4.0,
                                          seed=63)
    head = MODELS.build(dict(
        type="SimCCHead", in_channels=8, out_channels=k, input_size=(w * 4, h * 4),
        in_featuremap_size=(w, h), simcc_split_ratio=ratio, deconv_out_channels=None,
        loss=dict(type="RSPoseLoss", mode="simcc", use_target_weight=True, backend="torch"),
        decoder=dict(type="SimCCLabel", input_size=(w * 4, h * 4), smoothing_type="gaussian",
                     sigma=4.0, simcc_split_ratio=ratio)))
    feats = (torch.randn(b, 8, h, w, generator=torch.Generator().manual_seed(64)),)
    samples = _samples(dict(keypoint_x_labels=gx, keypoint_y_labels=gy, keypoint_weights=weight))
    losses = head.loss(feats, samples, train_cfg={})
    expected = RSPoseLoss(mode="simcc", backend="torch")(head.forward(feats), (gx, gy), weight)
    torch.testing.assert_close(losses["loss_kpt"], expected)
    assert_same_parameter_gradients(head, losses["loss_kpt"], expected)
