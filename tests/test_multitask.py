"""Multitask: each head learns only from its own task; the trunk from all."""

from __future__ import annotations

import functools
import json
import os
import sys

import chex
import jax
import numpy as np
import pytest

from tljax import models
from tljax.drivers import multitask as multitask_driver
from tljax.methods import multitask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import multitask as multitask_config  # noqa: E402

MODEL = multitask.MultiTaskModel(models.MLP((8,)),
                                 tasks=(("a", 3), ("b", 2)))
RNG = np.random.default_rng(0)
BATCH = {"x_a": RNG.normal(size=(6, 4)).astype(np.float32),
         "y_a": RNG.integers(0, 3, 6).astype(np.int32),
         "x_b": RNG.normal(size=(5, 4)).astype(np.float32),
         "y_b": RNG.integers(0, 2, 5).astype(np.int32)}
PARAMS = MODEL.init(jax.random.key(0), BATCH["x_a"][:1])["params"]


def _np_head_grad(task):
  """Hand-computed gradient of the mean cross-entropy w.r.t. one head."""
  layer = PARAMS["backbone"]["layer_0"]
  x, y = BATCH[f"x_{task}"], BATCH[f"y_{task}"]
  h = np.maximum(x @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"]),
                 0)
  head = PARAMS[f"head_{task}"]
  z = h @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  d = (p - np.eye(z.shape[1])[y]) / len(x)
  return {"kernel": h.T @ d, "bias": d.sum(0)}


def _grads(batch, weights):
  fn = functools.partial(multitask.multitask_loss, model=MODEL,
                         weights=weights)
  return jax.jit(jax.grad(lambda p: fn(p, None, batch, None)[0]))(PARAMS)


def test_parameters_are_a_trunk_and_one_head_per_task():
  assert sorted(PARAMS) == ["backbone", "head_a", "head_b"]
  assert PARAMS["head_a"]["kernel"].shape == (8, 3)
  with pytest.raises(ValueError, match="unknown task 'c'"):
    MODEL.apply({"params": PARAMS}, BATCH["x_a"], task="c")


def test_heads_get_gradients_only_from_their_own_losses():
  g = _grads(BATCH, (("a", 0.3), ("b", 2.0)))
  for task, w in (("a", 0.3), ("b", 2.0)):
    want = jax.tree.map(lambda v, w=w: w * v, _np_head_grad(task))
    chex.assert_trees_all_close(g[f"head_{task}"], want, rtol=1e-5,
                                atol=1e-6)
  # Task b's labels change nothing in head a's gradient...
  flipped = dict(BATCH, y_b=1 - BATCH["y_b"])
  g2 = _grads(flipped, (("a", 0.3), ("b", 2.0)))
  chex.assert_trees_all_equal(g2["head_a"], g["head_a"])
  # ... and a task with weight 0 trains nothing, its head least of all.
  g0 = _grads(BATCH, (("a", 1.0), ("b", 0.0)))
  chex.assert_trees_all_equal(g0["head_b"],
                              jax.tree.map(np.zeros_like, PARAMS["head_b"]))
  ga = _grads(BATCH, (("a", 1.0),))
  chex.assert_trees_all_close(g0["backbone"], ga["backbone"])


def test_shared_inputs_and_metrics():
  batch = {"x": BATCH["x_a"], "y_a": BATCH["y_a"],
           "y_b": BATCH["y_a"] % 2}
  loss, m = jax.jit(functools.partial(
      multitask.multitask_loss, model=MODEL,
      weights=(("a", 1.0), ("b", 0.5))))(PARAMS, None, batch, None)
  np.testing.assert_allclose(loss, m["loss_a"] + 0.5 * m["loss_b"],
                             rtol=1e-6)
  assert set(m) == {"loss_a", "loss_b", "accuracy_a", "accuracy_b"}
  with pytest.raises(ValueError, match="no labels 'y_b'"):
    multitask.multitask_loss(PARAMS, None, {"x": batch["x"],
                                            "y_a": batch["y_a"]}, None,
                             model=MODEL, weights=(("a", 1.0), ("b", 1.0)))
  with pytest.raises(ValueError, match="does not have"):
    multitask.multitask_loss(PARAMS, None, batch, None, model=MODEL,
                             weights=(("c", 1.0),))


def test_task_batches():
  b = multitask.task_batches(
      {"a": {"x": BATCH["x_a"], "y": BATCH["y_a"]},
       "b": {"x": BATCH["x_b"], "y": BATCH["y_b"]}}, 4, 3, seed=0)
  assert {k: v.shape for k, v in b.items()} == {
      "x_a": (3, 4, 4), "y_a": (3, 4), "x_b": (3, 4, 4), "y_b": (3, 4)}
  # Every row comes from its own task's examples.
  assert all(any(np.array_equal(r, e) for e in BATCH["x_b"])
             for r in b["x_b"].reshape(-1, 4))


def test_quick_experiment_writes_results(tmp_path):
  config = multitask_config.get_config("quick")
  m = multitask_driver.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)["metrics"]
  assert set(saved) >= {"joint/target_accuracy", "joint/source_accuracy",
                        "target_only/target_accuracy", "joint_gain_on_target"}
  assert len(saved["joint/target_accuracy"]["runs"]) == 2
  np.testing.assert_allclose(
      m["joint_gain_on_target"], saved["joint/target_accuracy"]["mean"]
      - saved["target_only/target_accuracy"]["mean"])
