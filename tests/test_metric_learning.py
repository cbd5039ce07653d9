"""Siamese and triplet steps (one device, mesh, pmap) and their evaluation."""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax import data
from tljax import losses
from tljax import models
from tljax.data import episodes
from tljax.methods import metric_learning as ml
from tljax.train import parallel
from tljax.train import state as state_lib

LR = 0.1


def _setup(mining):
  model = ml.EmbeddingNet(models.MLP((16,)), dim=4)
  params = model.init(jax.random.key(0), jnp.zeros((1, 6)))["params"]
  rng = np.random.default_rng(0)
  # 16 examples, 4 classes; after pmap's split each device holds 4 examples
  # of at most 2 classes, so per-device mining would see other triplets.
  x = rng.normal(size=(16, 6)).astype(np.float32)
  y = np.repeat(np.arange(4), 4).astype(np.int32)
  loss_kw = dict(margin=1.0, mining=mining, distance="l2")
  return model, params, {"x": x, "y": y}, loss_kw


def _one_step_matches(step, tx, params, batch, want_loss, want_params,
                      modes):
  """One compiled step in each of ``modes`` gives the reference loss and
  the parameters of one SGD step on the whole batch."""
  for mode in modes:
    compiled = parallel.compile_step(step, mode, donate=False)
    state = compiled.put_state(state_lib.create_train_state(params, tx))
    state, metrics = compiled(state, compiled.put_batch(batch),
                              jax.random.key(1))
    np.testing.assert_allclose(compiled.metrics(metrics)["loss"], want_loss,
                               rtol=1e-5, err_msg=mode)
    chex.assert_trees_all_close(compiled.get_state(state).params, want_params,
                                rtol=1e-5, atol=1e-6)


# Every mining mode mines the same gathered global batch; batch-all's own
# definition is tested against numpy in test_metric_losses.py.
@pytest.mark.parametrize("mining", ["hard", "semi_hard"])
def test_triplet_step_sees_global_batch_on_every_parallel_mode(mining):
  if jax.device_count() < 4:
    pytest.fail("conftest must configure 4 CPU devices")
  model, params, batch, kw = _setup(mining)

  # Independent reference: the loss and one SGD step on the whole batch,
  # computed directly (no train_step, no devices).
  def global_loss(p):
    emb = model.apply({"params": p}, batch["x"])
    return losses.triplet_loss(emb, batch["y"], **kw)
  want_loss, g = jax.value_and_grad(global_loss)(params)
  want_params = jax.tree.map(lambda p, g: p - LR * g, params, g)
  # Mining on each device's shard alone would give a different loss.
  emb = model.apply({"params": params}, batch["x"])
  local = np.mean([float(losses.triplet_loss(emb[i:i + 4], batch["y"][i:i + 4],
                                             **kw)) for i in range(0, 16, 4)])
  assert abs(local - float(want_loss)) > 1e-3

  tx = optax.sgd(LR)
  step = ml.make_step(model, tx, loss="triplet", **kw)
  # "single" is the reference above, jitted
  _one_step_matches(step, tx, params, batch, want_loss, want_params,
                    ("mesh", "pmap"))


def test_contrastive_step_pmap_equals_global_batch():
  model = ml.EmbeddingNet(models.MLP((16,)), dim=4)
  params = model.init(jax.random.key(0), jnp.zeros((1, 6)))["params"]
  rng = np.random.default_rng(1)
  batch = {"x1": rng.normal(size=(8, 6)).astype(np.float32),
           "x2": rng.normal(size=(8, 6)).astype(np.float32),
           "same": np.array([1, 0] * 4, np.int32)}
  kw = dict(pos_margin=0.1, neg_margin=3.0)

  def global_loss(p):
    ea = model.apply({"params": p}, batch["x1"])
    eb = model.apply({"params": p}, batch["x2"])
    d = jnp.linalg.norm(ea - eb, axis=-1)
    s = batch["same"]
    return jnp.mean(0.5 * s * jnp.maximum(d - 0.1, 0) ** 2
                    + 0.5 * (1 - s) * jnp.maximum(3.0 - d, 0) ** 2)
  want_loss, g = jax.value_and_grad(global_loss)(params)
  assert float(want_loss) > 0.1
  want_params = jax.tree.map(lambda p, g: p - LR * g, params, g)
  tx = optax.sgd(LR)
  step = ml.make_step(model, tx, loss="contrastive", **kw)
  _one_step_matches(step, tx, params, batch, want_loss, want_params,
                    ("single", "pmap"))


def test_recall_at_k_by_hand():
  # 1-D points: 0:a(0.0) 1:a(0.9) 2:b(1.0) 3:b(3.0) 4:a(3.2)
  emb = np.array([[0.0], [0.9], [1.0], [3.0], [3.2]])
  y = np.array([0, 0, 1, 1, 0])
  # Nearest others: 0->1 (a, hit), 1->2 (b, miss), 2->1 (a, miss),
  # 3->4 (a, miss), 4->3 (b, miss). Two nearest: 0:{1,2} hit,
  # 1:{2,0} hit, 2:{1,0} miss, 3:{4,2} hit, 4:{3,2} miss.
  got = ml.recall_at_k(emb, y, (1, 2))
  assert got == {"recall@1": 0.2, "recall@2": 0.6}


def test_verification_auc_against_pair_counting():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(12, 3))
  y = rng.integers(0, 3, 12)
  d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
  pos, neg = [], []
  for i, j in itertools.combinations(range(12), 2):
    (pos if y[i] == y[j] else neg).append(-d[i, j])
  # AUC = P(score of a same pair > score of a different pair).
  want = np.mean([1.0 if p > n else 0.5 if p == n else 0.0
                  for p in pos for n in neg])
  np.testing.assert_allclose(ml.verification_auc(emb, y), want, rtol=1e-6)


@pytest.mark.parametrize("fn,args,msg", [
    (ml.recall_at_k, (np.zeros(5), np.zeros(5)), "shape \\(n, dim\\)"),
    (ml.recall_at_k, (np.zeros((5, 2)), np.zeros(4)), "labels must have"),
    (ml.recall_at_k, (np.zeros((5, 2)), np.zeros(5), (5,)), "k must be in"),
    (ml.recall_at_k, (np.full((3, 2), np.nan), np.zeros(3)), "NaN"),
    (ml.verification_auc, (np.zeros((4, 2)), np.zeros(4)), "both same"),
    (ml.verification_auc, (np.zeros((1, 2)), np.zeros(1)), "at least two"),
])
def test_bad_eval_input_raises(fn, args, msg):
  with pytest.raises(ValueError, match=msg):
    fn(*args)


def test_triplet_training_separates_new_examples_of_its_classes():
  """100 steps on digits 0-4 improve retrieval of unseen test images of 0-4."""
  train = data.load("digits", classes=range(5), relabel=False)
  test = data.load("digits", "test", classes=range(5), relabel=False)
  model = ml.EmbeddingNet(models.MLP((32,)), dim=8)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  before = ml.evaluate(model, params, test, ks=(1,))
  tx = optax.adam(3e-3)
  step = jax.jit(ml.make_step(model, tx, mining="semi_hard", margin=0.5))
  state = state_lib.create_train_state(params, tx)
  it = episodes.class_balanced_batches(train, classes_per_batch=5,
                                       examples_per_class=8, seed=0)
  for _ in range(100):
    state, m = step(state, next(it), jax.random.key(0))
  after = ml.evaluate(model, state.params, test, ks=(1,))
  assert np.isfinite(m["loss"])
  assert after["auc"] > before["auc"] + 0.05, (before, after)
  assert after["recall@1"] > 0.95, (before, after)


def test_proxy_anchor_step_sees_global_batch_on_every_parallel_mode():
  """The class matrix params['proxies'] and the gathered batch: one mesh or
  pmap step equals one SGD step on the whole batch, computed directly."""
  model, params, batch, _ = _setup("all")
  params = dict(params, proxies=ml.init_proxies(jax.random.key(3), 4, 4))
  kw = dict(margin=0.1, alpha=8.0)

  def global_loss(p):
    emb = model.apply({"params": {k: p[k] for k in ("backbone", "head")}},
                      batch["x"])
    return losses.proxy_anchor_loss(emb, batch["y"], p["proxies"], **kw)
  want_loss, g = jax.jit(jax.value_and_grad(global_loss))(params)
  assert float(jnp.abs(g["proxies"]).max()) > 1e-3
  want_params = jax.tree.map(lambda p, g: p - LR * g, params, g)
  tx = optax.sgd(LR)
  step = ml.make_step(model, tx, loss="proxy_anchor", **kw)
  _one_step_matches(step, tx, params, batch, want_loss, want_params,
                    ("mesh", "pmap"))
  with pytest.raises(ValueError, match="init_proxies"):
    ml.batch_loss(_setup("all")[1], None, batch, None, model=model,
                  loss="cosface")


def _np_map_at_r(e, y):
  """MAP@R and R-precision by the definitions, one query at a time."""
  aps, rps = [], []
  for i in range(len(y)):
    r = int(np.sum(y == y[i])) - 1
    if r == 0:
      continue
    d = [(np.linalg.norm(e[i] - e[j]), j) for j in range(len(y)) if j != i]
    ranked = [j for _, j in sorted(d)][:r]
    rel = [float(y[j] == y[i]) for j in ranked]
    aps.append(sum(rel[k] * sum(rel[:k + 1]) / (k + 1) for k in range(r)) / r)
    rps.append(sum(rel) / r)
  return np.mean(aps), np.mean(rps)


def test_map_at_r_and_r_precision_by_hand():
  # 1-D: 0:a(0) 1:a(1) 2:b(2.5) 3:a(3) 4:b(3.2) 5:c(9) (c is alone: skipped)
  e = np.array([[0.0], [1.0], [2.5], [3.0], [3.2], [9.0]])
  y = np.array([0, 0, 1, 0, 1, 2])
  # R = 2 for class a: q0 -> [1 hit, 2 miss]: AP 1/2, RP 1/2.
  # q1 -> [0 (d 1) hit, 2 (d 1.5) miss]: 1/2, 1/2. q3 -> [4 (.2) miss,
  # 2 (.5) miss]: 0, 0. R = 1 for class b: q2 -> [3 (.5) miss]: 0, 0;
  # q4 -> [3 (.2) miss]: 0, 0.
  got = ml.map_at_r(e, y)
  np.testing.assert_allclose(got["map@r"], 1.0 / 5)
  np.testing.assert_allclose(got["r_precision"], 1.0 / 5)
  # A later hit counts its precision: q with rel [0, 1] has AP 1/2 * 1/2.
  got = ml.map_at_r(np.array([[0.0], [1.0], [2.5], [3.0]]),
                    np.array([0, 0, 1, 0]))
  np.testing.assert_allclose(got["map@r"], (0.5 + 0.5 + 0.25) / 3)
  rng = np.random.default_rng(5)
  e, y = rng.normal(size=(30, 3)), rng.integers(0, 4, 30)
  want = _np_map_at_r(e, y)
  got = ml.map_at_r(e, y)
  np.testing.assert_allclose([got["map@r"], got["r_precision"]], want,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="one example"):
    ml.map_at_r(np.eye(3), np.arange(3))


def test_retrieval_metrics_equal_pytorch_metric_learning():
  # torch and pytorch-metric-learning come with the test extra
  import torch
  from pytorch_metric_learning.distances import LpDistance
  from pytorch_metric_learning.utils.accuracy_calculator import (
      AccuracyCalculator)
  from pytorch_metric_learning.utils.inference import CustomKNN
  rng = np.random.default_rng(6)
  e = rng.normal(size=(60, 4)).astype(np.float32)
  y = rng.integers(0, 5, 60)
  y[0] = 9  # a class of one example, which both skip
  calc = AccuracyCalculator(
      include=("precision_at_1", "r_precision",
               "mean_average_precision_at_r"),
      knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
      kmeans_func=lambda *a: None)
  te = torch.tensor(e)
  want = calc.get_accuracy(te, torch.tensor(y))
  got = ml.map_at_r(e, y)
  np.testing.assert_allclose(got["map@r"], want["mean_average_precision_at_r"],
                             rtol=1e-6)
  np.testing.assert_allclose(got["r_precision"], want["r_precision"],
                             rtol=1e-6)
  # PML's precision@1 skips the lone query; recall@1 counts it as a miss.
  keep = y != 9
  np.testing.assert_allclose(
      ml.recall_at_k(e, y)["recall@1"] * 60 / keep.sum(),
      want["precision_at_1"], rtol=1e-6)


def test_class_balanced_sampler_is_pure_and_shards_over_processes():
  ds = data.load("digits", classes=range(6), relabel=False)
  kw = dict(classes_per_batch=3, examples_per_class=4, seed=7)
  a, b = (episodes.ClassBalancedSampler(ds, **kw) for _ in range(2))
  for step in (0, 5, 123):
    g = a.batch(step, process_index=0, process_count=1)
    # P classes x M distinct examples each, grouped by class.
    assert g["x"].shape == (12, 8, 8, 1)
    assert np.unique(g["y"]).size == 3
    assert all(np.sum(g["y"] == c) == 4 for c in np.unique(g["y"]))
    assert np.unique(a.indices(step)).size == 12
    np.testing.assert_array_equal(ds.y[a.indices(step)], g["y"])
    # A pure function of (seed, step): another sampler, any order.
    np.testing.assert_array_equal(b.indices(step), a.indices(step))
    # Two processes' slices are the global batch.
    parts = [a.batch(step, process_index=i, process_count=2)
             for i in range(2)]
    np.testing.assert_array_equal(
        np.concatenate([p["x"] for p in parts]), g["x"])
  assert not np.array_equal(a.indices(0), a.indices(1))
  it = episodes.class_balanced_batches(ds, start_step=5, process_index=0,
                                       process_count=1, **kw)
  np.testing.assert_array_equal(next(it)["y"], a.batch(5)["y"])
  with pytest.raises(ValueError, match="does not split over 5 processes"):
    a.batch(0, process_index=0, process_count=5)
  with pytest.raises(ValueError, match="too few examples"):
    episodes.ClassBalancedSampler(ds, classes_per_batch=2,
                                  examples_per_class=1000)


def test_softmax_classifier_loss_is_cross_entropy_by_hand():
  rng = np.random.default_rng(3)
  e, w = rng.normal(size=(6, 4)), rng.normal(size=(3, 4))
  y = np.array([0, 2, 1, 1, 0, 2])
  logits = e @ w.T / 2.0   # 1/sqrt(dim)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  want = -logp[np.arange(6), y].mean()
  got = losses.softmax_classifier_loss(jnp.asarray(e, jnp.float32), jnp.asarray(y),
                                   jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
