"""Cached features: correct features, disk cache, and the same head as
training through the frozen backbone."""

from __future__ import annotations

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import data as data_lib
from tljax import evaluation
from tljax import models
from tljax import optim
from tljax.drivers import common
from tljax.methods import features
from tljax.methods import supervised
from tljax.train import trainer as trainer_lib

MODEL = models.Classifier(models.MLP((16, 12)), num_classes=3)
X = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
Y = np.random.default_rng(1).integers(0, 3, 50).astype(np.int32)
PARAMS = MODEL.init(jax.random.key(0), jnp.zeros((1, 6)))["params"]


def _np_features(x):
  h = x
  for i in range(2):
    layer = PARAMS["backbone"][f"layer_{i}"]
    h = np.maximum(h @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"]),
                   0.0)
  return h


def test_features_match_a_numpy_forward_pass():
  cache = features.FeatureCache.build(MODEL, PARAMS, X, batch_size=16)
  np.testing.assert_allclose(cache.features, _np_features(X), rtol=1e-5,
                             atol=1e-6)
  # A subset in another order maps to its own rows.
  idx = np.array([7, 3, 3, 42])
  np.testing.assert_allclose(cache.lookup(X[idx]), _np_features(X[idx]),
                             rtol=1e-5, atol=1e-6)


def test_disk_cache_is_reused_and_keyed_by_params(tmp_path, monkeypatch):
  first = common.feature_cache(MODEL, PARAMS, X, workdir=str(tmp_path),
                               name="target")
  files = os.listdir(tmp_path / "features")
  assert len(files) == 1 and files[0].startswith("target-")

  def fail(*a, **k):
    raise AssertionError("the backbone ran again")

  monkeypatch.setattr(features, "extract_features", fail)
  again = common.feature_cache(MODEL, PARAMS, X, workdir=str(tmp_path),
                               name="target")
  np.testing.assert_array_equal(again.features, first.features)
  monkeypatch.undo()
  other = jax.tree.map(lambda p: p + 1.0, PARAMS)
  common.feature_cache(MODEL, other, X, workdir=str(tmp_path),
                       name="target")
  assert len(os.listdir(tmp_path / "features")) == 2


def test_bad_lookups_raise():
  cache = features.FeatureCache.build(MODEL, PARAMS, X)
  with pytest.raises(ValueError, match="not in the feature cache"):
    cache.lookup(X[:3] + 1.0)
  with pytest.raises(ValueError, match="do not match"):
    cache.lookup(np.zeros((2, 5), np.float32))
  with pytest.raises(ValueError, match="non-empty"):
    features.extract_features(MODEL, PARAMS, np.zeros((0, 6), np.float32))


def test_head_on_cache_equals_head_through_frozen_backbone():
  steps, bs, seed, rng = 25, 10, 7, jax.random.key(0)
  # Through the frozen backbone.
  rules = [("backbone/.*", None), (".*", 1.0)]
  tx = optim.make_optimizer(PARAMS, learning_rate=0.05, lr_rules=rules)
  full, _ = trainer_lib.Trainer(supervised.make_step(MODEL, tx), tx,
                                parallel="single").train_from(
      PARAMS, {"x": X, "y": Y}, batch_size=bs, num_steps=steps, seed=seed,
      rng=rng)
  # On the cache.
  cache = features.FeatureCache.build(MODEL, PARAMS, X)
  head = features.head_params(PARAMS)
  htx = optim.make_optimizer(head, learning_rate=0.05)
  probe, _ = trainer_lib.Trainer(features.make_step(MODEL, htx), htx,
                                 parallel="single").train_from(
      head, {"features": cache.features, "y": Y}, batch_size=bs,
      num_steps=steps, seed=seed, rng=rng)
  chex.assert_trees_all_equal(full.params["backbone"], PARAMS["backbone"])
  assert not np.allclose(full.params["head"]["kernel"],
                         PARAMS["head"]["kernel"])
  chex.assert_trees_all_close(probe.params["head"], full.params["head"],
                              rtol=1e-5, atol=1e-6)
  through = evaluation.evaluate(
      MODEL, full.params, data_lib.Dataset(X, Y, 3, "x"))
  assert features.head_accuracy(MODEL, probe.params, cache.features, Y) == \
      through["accuracy"]
