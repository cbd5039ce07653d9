"""Smoke tests of experiments/adapt.py through train_and_evaluate: every
method on the quick config, the user's own npz files, and bad inputs."""

import json
import os
import sys

import numpy as np
import pytest

from tljax.drivers import adapt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import adapt as adapt_config  # noqa: E402


def _quick(method, pair="moons", **overrides):
  config = adapt_config.get_config(f"{pair},quick")
  config.method = method
  config.plot = False
  config.parallel = "single"
  config.update(overrides)
  return config


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_dann_quick_on_a_device_mesh_writes_results_history_and_plot(
    tmp_path):
  wd = str(tmp_path / "dann")
  m = adapt.train_and_evaluate(_quick("dann", plot=True, parallel="auto"), wd)
  res = _results(wd)
  assert res["metrics"]["target_accuracy"] == m["target_accuracy"]
  assert 0.0 <= m["target_accuracy"] <= 1.0
  assert 0.0 <= m["domain_accuracy"] <= 1.0
  hist = res["domain_accuracy_history"]
  assert [s for s, _ in hist] == [3, 6]
  assert all(0.0 <= a <= 1.0 for _, a in hist)
  assert res["config"]["method"] == "dann"
  assert os.path.getsize(os.path.join(wd, "embedding.png")) > 1000


@pytest.mark.parametrize("method", ["source_only", "target_supervised", "mmd",
                                    "coral", "kmm", "tca", "jda", "cdan_e",
                                    "mcc",
                                    "self_training", "adda"])
def test_each_method_quick(tmp_path, method):
  wd = str(tmp_path / method)
  # the new methods with the bottleneck (BatchNorm state), CDAN+E with the
  # randomized map and the domain classifier at 10x the rate
  overrides = ({"bottleneck_dim": 8, "disc_lr_mult": 10.0,
                "cdan": {"max_dim": 8, "random_dim": 16}}
               if method in ("cdan_e", "mcc", "self_training", "adda") else {})
  m = adapt.train_and_evaluate(_quick(method, **overrides), wd)
  got = _results(wd)["metrics"]
  assert 0.0 <= got["target_accuracy"] <= 1.0
  assert got["target_accuracy"] == m["target_accuracy"]
  if method == "kmm":
    assert got["kmm_weight_max"] > 1.0
  if method in ("tca", "jda"):
    assert got[f"{method}_n_components"] == 2  # moons: 2-d inputs
    assert {"target_accuracy_1nn", "target_accuracy_logreg",
            "raw_target_accuracy_1nn"} <= set(got)
  if method in ("mmd", "coral", "mcc", "self_training"):
    assert got["align_loss"] >= 0.0
  if method in ("cdan_e", "adda"):
    assert 0.0 <= got["domain_accuracy"] <= 1.0
  if method == "self_training":
    assert 0.0 <= got["pseudo_label_fraction"] <= 1.0
  if method == "adda":
    # two phases: source pretraining, then the adversarial one
    assert os.path.exists(os.path.join(wd, "metrics_pretrain.jsonl"))


def test_coil_preset_quick(tmp_path):
  from tljax.data import sources  # pylint: disable=g-import-not-at-top
  d = sources.shared_data_dir()
  if not os.path.exists(os.path.join(d, "coil1.npz")):
    pytest.skip(f"COIL-20 data not found at {os.path.abspath(d)} (coil1.npz, "
                "coil2.npz; see ../shared/data/README.md): skipping the COIL "
                "domain adaptation preset")
  wd = str(tmp_path / "coil")
  m = adapt.train_and_evaluate(_quick("dann", pair="coil"), wd)
  assert 0.0 <= m["target_accuracy"] <= 1.0
  assert _results(wd)["backbone"] == "mlp"


def _write(path, x, y=None):
  arrays = {"x": x} if y is None else {"x": x, "y": y}
  np.savez(path, **arrays)
  return f"npz:{path}"


def test_users_own_npz_files_and_bad_inputs(tmp_path):
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(60, 4)).astype(np.float32)
  ys = (xs[:, 0] > 0).astype(np.int64)
  src = _write(tmp_path / "src.npz", xs, ys)
  tgt = _write(tmp_path / "tgt.npz", xs + 1.0, ys)
  m = adapt.train_and_evaluate(_quick("coral", source=src, target=tgt,
                                   batch_size=8), str(tmp_path / "ok"))
  assert 0.0 <= m["target_accuracy"] <= 1.0
  # feature dimensions differ between the domains
  other = _write(tmp_path / "dim.npz", rng.normal(size=(60, 3)), ys)
  with pytest.raises(ValueError, match="share one input shape"):
    adapt.train_and_evaluate(_quick("dann", source=src, target=other),
                          str(tmp_path / "dim"))
  # an empty target
  empty = _write(tmp_path / "empty.npz", np.zeros((0, 4), np.float32))
  with pytest.raises(ValueError, match="empty"):
    adapt.train_and_evaluate(_quick("dann", source=src, target=empty),
                          str(tmp_path / "empty"))
  # NaN in the target's features
  bad = xs.copy()
  bad[3, 1] = np.nan
  nan = _write(tmp_path / "nan.npz", bad, ys)
  with pytest.raises(ValueError, match="NaN"):
    adapt.train_and_evaluate(_quick("tca", source=src, target=nan),
                          str(tmp_path / "nan"))
  with pytest.raises(ValueError, match="unknown method"):
    adapt.train_and_evaluate(_quick("wasserstein", source=src, target=tgt),
                          str(tmp_path / "m"))
  with pytest.raises(ValueError, match="pseudo_threshold must be in"):
    adapt.train_and_evaluate(_quick("self_training", source=src, target=tgt,
                                    pseudo_threshold=1.5),
                          str(tmp_path / "thr"))


def test_the_backbone_fits_the_data_and_can_be_swapped(tmp_path):
  """Flat feature vectors in an npz get an MLP under the default (mnist1d)
  config's ``auto``; naming another backbone needs no edits of the
  first's fields; a field the backbone does not take is one clear error."""
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(60, 64)).astype(np.float32)
  ys = (xs[:, 0] > 0).astype(np.int64)
  src = _write(tmp_path / "src.npz", xs, ys)
  tgt = _write(tmp_path / "tgt.npz", xs + 0.5, ys)
  base = dict(source=src, target=tgt, batch_size=8)
  config = _quick("source_only", pair="mnist1d", **base)
  assert config.model.name == "auto"
  wd = str(tmp_path / "auto")
  adapt.train_and_evaluate(config, wd)
  with open(os.path.join(wd, "results.json")) as f:
    assert json.load(f)["backbone"] == "mlp"
  for name in ("mlp", "cnn1d"):
    config = _quick("source_only", pair="mnist1d", **base)
    config.model.name = name
    m = adapt.train_and_evaluate(config, str(tmp_path / name))
    assert 0.0 <= m["target_accuracy"] <= 1.0
  with pytest.raises(ValueError, match=r"backbone 'resnet18' reads images "
                     r"\(height, width\[, channels\]\), but the examples "
                     r"have shape \(64,\).*auto picks 'mlp'"):
    config = _quick("source_only", pair="mnist1d", **base)
    config.model.name = "resnet18"
    adapt.train_and_evaluate(config, str(tmp_path / "resnet"))
  config = _quick("source_only", pair="mnist1d", **base)
  config.model.name = "mlp"
  config.model.mlp.features = (8,)
  config.model.cnn1d.channels = (1,)   # another backbone's: unused
  adapt.train_and_evaluate(config, str(tmp_path / "mlp8"))
  with pytest.raises(ValueError, match="model.channels is not a setting of "
                     "backbone 'mlp'"):
    config = _quick("source_only", pair="mnist1d", **base)
    config.model.name = "mlp"
    config.model.channels = (4,)
    adapt.train_and_evaluate(config, str(tmp_path / "bad"))


def test_config_arguments():
  assert adapt_config.get_config("digits").target == "digits:rotated"
  assert adapt_config.get_config("").source == "mnist1d:clean"
  assert adapt_config.get_config("office31").model.name == "resnet50"
  coil = adapt_config.get_config("coil21")
  assert (coil.source, coil.target) == ("coil:2", "coil:1")
  assert (coil.model.name, coil.bottleneck_dim, coil.disc_lr_mult) == (
      "mlp", 64, 10.0)
  with pytest.raises(ValueError, match="unknown config argument"):
    adapt_config.get_config("office32")
