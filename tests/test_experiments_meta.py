"""Smoke tests of experiments/meta.py and experiments/metric.py: every quick
config runs in-process and writes results.json."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from tljax import models
from tljax.data import episodes
from tljax.drivers import meta
from tljax.drivers import metric

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import meta as meta_config  # noqa: E402
from configs import metric as metric_config  # noqa: E402


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.mark.parametrize("name", ["protonet", "maml", "anil", "metasgd",
                                  "reptile", "hypernet", "baseline"])
def test_meta_classification_quick(tmp_path, name):
  config = meta_config.get_config(f"{name},quick")
  if name in ("protonet", "reptile"):
    config.parallel = "mesh"  # tasks of a meta-batch sharded over 4 devices
  m = meta.train_and_evaluate(config, str(tmp_path))
  r = _results(str(tmp_path))
  assert r["metrics"]["test_accuracy"] == m["test_accuracy"]
  assert 0.0 <= m["test_accuracy"] <= 1.0 and m["test_ci95"] >= 0.0
  assert r["config"]["method"] == name
  assert os.path.isdir(os.path.join(str(tmp_path), "params"))


@pytest.mark.parametrize("name", ["sinusoid_maml", "sinusoid_reptile",
                                  "sinusoid_pretrained"])
def test_meta_sinusoid_quick(tmp_path, name):
  config = meta_config.get_config(f"{name},quick")
  m = meta.train_and_evaluate(config, str(tmp_path))
  for k in config.eval_inner_steps:
    assert np.isfinite(m[f"mse_after_{k}"]) and m[f"mse_after_{k}"] > 0
    assert m[f"diverged_after_{k}"] == 0
  assert _results(str(tmp_path))["metrics"]["mse_after_1"] == m["mse_after_1"]
  if name == "sinusoid_maml":
    # A huge fine-tuning rate makes plain SGD blow up on every task; those
    # tasks are counted, not averaged in.
    params = models.init_params(meta.sinusoid_model(config), (1,), 0)
    bad = meta.sinusoid_evaluate(params, config, inner_lr=1e6)
    assert bad["diverged_after_0"] == 0 and np.isfinite(bad["mse_after_0"])
    assert bad["diverged_after_2"] == config.test_episodes
    # Finite but 100x worse than before any step also counts as diverged:
    # a rate that overshoots without overflowing.
    curve = np.asarray(meta._sinusoid_curve(meta.sinusoid_model(config), 2)(
        params, episodes.SinusoidTasks(seed=config.seed + 1000).batch(
            0, config.test_episodes, config.k_shot, config.test_n_query),
        np.float32(30.0)))
    want = ~(np.isfinite(curve[:, 2]) & (curve[:, 2] <= 100 * curve[:, 0]))
    assert np.isfinite(curve[:, 2]).any() and want.any()
    got = meta.sinusoid_evaluate(params, config, inner_lr=30.0)
    assert got["diverged_after_2"] == int(want.sum())


@pytest.mark.parametrize("loss", ["triplet", "contrastive", "supcon",
                                  "proxy_anchor", "softmax,digits"])
def test_metric_quick(tmp_path, loss):
  config = metric_config.get_config(f"{loss},quick")
  if loss == "proxy_anchor":
    config.proxy_lr_multiplier = 100.0   # an lr rule on params['proxies']
  m = metric.train_and_evaluate(config, str(tmp_path))
  r = _results(str(tmp_path))["metrics"]
  for k in ("recall@1", "recall@5", "map@r", "r_precision", "auc",
            "raw_recall@1", "raw_map@r", "raw_auc"):
    assert 0.0 <= r[k] <= 1.0 and r[k] == m[k]


def test_data_presets_set_the_held_out_protocol():
  for module, name in ((meta_config, "maml"), (metric_config, "triplet")):
    c = module.get_config(f"{name},coil")
    assert (c.data, c.train_classes, c.test_classes) == (
        "coil", tuple(range(10)), tuple(range(10, 20)))
    assert module.get_config(f"{name},digits,quick").data == "digits"
    assert module.get_config(name).data == "mnist1d:standard"


def test_bad_configs_raise_clear_errors(tmp_path):
  config = meta_config.get_config("protonet,quick")
  config.method = "siamese"
  with pytest.raises(ValueError, match="choose one of"):
    meta.train_and_evaluate(config, str(tmp_path))
  config = metric_config.get_config("triplet,quick")
  config.test_classes = (4, 5, 6)
  with pytest.raises(ValueError, match="overlap"):
    metric.train_and_evaluate(config, str(tmp_path))
  config = metric_config.get_config("quick")
  config.loss = "circle"
  with pytest.raises(ValueError, match="loss must be one of"):
    metric.train_and_evaluate(config, str(tmp_path))
  config = meta_config.get_config("anil,quick")
  config.maml.inner_rules = ()
  with pytest.raises(ValueError, match="anil adapts only the head"):
    meta.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("name,optimizer,msg", [
    ("maml", "adam", "Reptile only"),
    ("sinusoid_reptile", "adam", "Reptile only"),
    ("reptile", "rmsprop", "unknown inner_optimizer"),
])
def test_inner_optimizer_is_checked_before_training(tmp_path, name,
                                                    optimizer, msg):
  config = meta_config.get_config(f"{name},quick")
  config.maml.inner_optimizer = optimizer
  with pytest.raises(ValueError, match=msg):
    meta.train_and_evaluate(config, str(tmp_path))


def test_rotated_training_classes(tmp_path):
  # Digits 0-4 turned by 0/90/180/270 degrees: 20 meta-training classes
  # for the samplers and the baseline's 20-way pretraining head.
  config = meta_config.get_config("baseline,digits,quick")
  config.train_rotations = 4
  train_s, test_s = meta.samplers(config)
  assert len(train_s.classes) == 20 and test_s.classes.tolist() == [
      5, 6, 7, 8, 9]
  m = meta.train_and_evaluate(config, str(tmp_path / "baseline"))
  assert 0.0 <= m["test_accuracy"] <= 1.0
  head = _results(str(tmp_path / "baseline"))
  assert head["config"]["train_rotations"] == 4
  config = meta_config.get_config("protonet,quick")   # mnist1d signals
  config.train_rotations = 4
  with pytest.raises(ValueError, match="square images"):
    meta.train_and_evaluate(config, str(tmp_path / "mnist1d"))


@pytest.mark.parametrize("name,head_init,msg", [
    ("sinusoid_maml", "proto", "regression tasks"),
    ("maml", "zeros", "choose one of"),
])
def test_head_init_is_checked_before_training(tmp_path, name, head_init,
                                              msg):
  config = meta_config.get_config(f"{name},quick")
  config.maml.head_init = head_init
  with pytest.raises(ValueError, match=msg):
    meta.train_and_evaluate(config, str(tmp_path))


def test_init_from_loads_the_backbone_of_a_saved_classifier(tmp_path):
  """A MAML learner started from the baseline's workdir, scored with the
  proto head and no inner step, makes the baseline's own predictions: its
  nearest-centroid accuracy on the same test episodes. The learner's
  training is made a no-op (SGD at 1e-30) so the loaded backbone is what
  gets scored."""
  base_cfg = meta_config.get_config("baseline,quick")
  base = meta.train_and_evaluate(base_cfg, str(tmp_path / "base"))
  config = meta_config.get_config("maml,quick")
  config.init_from = str(tmp_path / "base")
  config.maml.head_init = "proto"
  config.maml.test_inner_steps = 0
  config.optim.name, config.optim.learning_rate = "sgd", 1e-30
  got = meta.train_and_evaluate(config, str(tmp_path / "maml"))
  assert got["test_accuracy"] == pytest.approx(base["test_accuracy"])
  config.init_from = ""   # the same learner from its own init differs
  fresh = meta.train_and_evaluate(config, str(tmp_path / "fresh"))
  assert fresh["test_accuracy"] != pytest.approx(base["test_accuracy"])
  config = meta_config.get_config("protonet,quick")
  config.init_from = str(tmp_path / "base")
  with pytest.raises(ValueError, match="init_from is for maml"):
    meta.train_and_evaluate(config, str(tmp_path / "proto"))
