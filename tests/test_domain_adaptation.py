"""The domain adaptation step: gradients against an independent calculation,
the DANN min-max on a worked case, and the same result on one device, a
4-device mesh and pmap."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax import models
from tljax.methods import domain_adaptation as da
from tljax.train import parallel
from tljax.train import state as state_lib

MODEL = models.Classifier(backbone=models.MLP(features=(8,)), num_classes=2)
DISC = da.discriminator(features=(8,))


def _batch(seed=0, n=8, d=2):
  rng = np.random.default_rng(seed)
  return {"x": rng.normal(size=(n, d)).astype(np.float32),
          "y": rng.integers(0, 2, n).astype(np.int32),
          "x_target": (rng.normal(size=(n, d)) * 1.5 + 1.0).astype(
              np.float32)}


def _params(alignment_name="dann"):
  params = models.init_params(MODEL, (2,), 0)
  if alignment_name == "dann":
    params = da.add_discriminator(params, MODEL, DISC, (2,), 1)
  return params


def _state(params, step=0):
  tx = optax.sgd(0.1)
  return state_lib.create_train_state(params, tx).replace(
      step=jnp.asarray(step, jnp.int32))


@pytest.mark.parametrize("step,expected", [
    (0, 0.0), (50, 2 / (1 + np.exp(-5.0)) - 1), (100, 2 / (1 + np.exp(-10.0))
                                                 - 1), (250, 0.9999092)])
def test_dann_lambda_schedule(step, expected):
  assert np.isclose(float(da.dann_lambda(step, 100)), expected, atol=1e-6)
  assert float(da.dann_lambda(step, 100, schedule="constant")) == 1.0


def _np_bce(logits, label):
  p = 1 / (1 + np.exp(-logits))
  return -np.log(p if label else 1 - p)


def test_dann_gradients_equal_class_grad_minus_lam_domain_grad():
  """Independent calculation: no reversal layer, the two losses
  differentiated separately and combined by hand."""
  params, batch = _params(), _batch()
  state = _state(params, step=30)
  lam = float(da.dann_lambda(30, 100))

  def class_loss(p):
    h = MODEL.apply({"params": da.classifier_params(p)}, batch["x"],
                    method="features")
    logits = MODEL.apply({"params": da.classifier_params(p)}, h,
                         method="logits_from_features")
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["y"]).mean()

  def domain_loss(p):
    h = MODEL.apply({"params": da.classifier_params(p)},
                    jnp.concatenate([batch["x"], batch["x_target"]]),
                    method="features")
    d = DISC.apply({"params": p["disc"]}, h)[:, 0]
    return 0.5 * (optax.sigmoid_binary_cross_entropy(d[:8], 0.0).mean()
                  + optax.sigmoid_binary_cross_entropy(d[8:], 1.0).mean())

  gc = jax.jit(jax.grad(class_loss))(params)
  gd = jax.jit(jax.grad(domain_loss))(params)
  loss_fn = functools.partial(da.adaptation_loss, model=MODEL,
                              alignment_name="dann", discriminator=DISC,
                              total_steps=100)
  (loss, metrics), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      params, state, batch, jax.random.key(0))
  np.testing.assert_allclose(
      loss, jax.jit(lambda p: class_loss(p) + domain_loss(p))(params),
      rtol=1e-5)
  chex.assert_trees_all_close(
      {"backbone": g["backbone"], "head": g["head"]},
      {"backbone": jax.tree.map(lambda a, b: a - lam * b, gc["backbone"],
                                gd["backbone"]), "head": gc["head"]},
      rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(g["disc"], gd["disc"], rtol=1e-5, atol=1e-7)
  assert np.isclose(float(metrics["lam"]), lam)
  # the domain loss itself against numpy BCE on the discriminator's logits
  h = MODEL.apply({"params": da.classifier_params(params)},
                  jnp.concatenate([batch["x"], batch["x_target"]]),
                  method="features")
  d = np.asarray(DISC.apply({"params": params["disc"]}, h)[:, 0], np.float64)
  ref = 0.5 * (np.mean([_np_bce(v, 0) for v in d[:8]])
               + np.mean([_np_bce(v, 1) for v in d[8:]]))
  np.testing.assert_allclose(metrics["align_loss"], ref, rtol=1e-5)
  acc = 0.5 * (np.mean(d[:8] < 0) + np.mean(d[8:] > 0))
  assert np.isclose(float(metrics["domain_accuracy"]), acc)


def test_dann_step_discriminator_improves_while_features_confuse_it():
  """A worked case: one step lowers the domain loss through the domain
  classifier's own update and raises it through the features' update."""
  params, batch = _params(), _batch(1, n=16)
  tx = optax.sgd(0.05)
  state = state_lib.create_train_state(params, tx).replace(
      step=jnp.asarray(60, jnp.int32))
  step = da.make_step(MODEL, tx, alignment_name="dann", discriminator=DISC,
                      total_steps=100)
  new_state, _ = jax.jit(step)(state, batch, jax.random.key(0))

  @jax.jit
  def _dloss(p):
    return da.adaptation_loss(p, state, batch, None, model=MODEL,
                              alignment_name="dann", discriminator=DISC,
                              total_steps=100)[1]["align_loss"]

  dloss = lambda p: float(_dloss(p))  # noqa: E731

  old, new = params, new_state.params
  before = dloss(old)
  disc_only = dict(old, disc=new["disc"])
  feats_only = dict(new, disc=old["disc"])
  assert dloss(disc_only) < before < dloss(feats_only)


@pytest.mark.parametrize("alignment_name", ["mmd", "coral"])
def test_mmd_coral_loss_is_class_loss_plus_lam_times_numpy_alignment(
    alignment_name):
  params, batch = _params(alignment_name), _batch(2)
  state = _state(params, step=40)
  loss, m = da.adaptation_loss(params, state, batch, None, model=MODEL,
                               alignment_name=alignment_name,
                               total_steps=100, weight=2.0)
  v = {"params": da.classifier_params(params)}
  hs = np.asarray(MODEL.apply(v, batch["x"], method="features"), np.float64)
  ht = np.asarray(MODEL.apply(v, batch["x_target"], method="features"),
                  np.float64)
  if alignment_name == "coral":
    ref = np.sum((np.cov(hs, rowvar=False) - np.cov(ht, rowvar=False)) ** 2)
    ref /= 4 * hs.shape[1] ** 2
  else:
    z = np.concatenate([hs, ht])
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    sigma2 = d2.sum() / (16 * 15)
    ks = [np.exp(-d2 / (sigma2 * 2.0 ** p)) for p in (-2, -1, 0, 1, 2)]
    k = np.mean(ks, 0)
    ref = k[:8, :8].mean() + k[8:, 8:].mean() - 2 * k[:8, 8:].mean()
  lam = 2.0 * (2 / (1 + np.exp(-4.0)) - 1)
  np.testing.assert_allclose(m["align_loss"], ref, rtol=1e-3, atol=1e-7)
  np.testing.assert_allclose(loss, m["class_loss"] + lam * ref, rtol=1e-3)


def test_weighted_source_loss_matches_numpy():
  params, batch = _params("none"), _batch(3)
  w = np.linspace(0.0, 2.0, 8).astype(np.float32)
  batch["w"] = w
  loss, _ = da.adaptation_loss(params, _state(params), batch, None,
                               model=MODEL, alignment_name="none")
  logits = np.asarray(MODEL.apply({"params": da.classifier_params(params)},
                                  batch["x"]), np.float64)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  ce = -logp[np.arange(8), batch["y"]]
  np.testing.assert_allclose(loss, np.sum(w * ce) / np.sum(w), rtol=1e-5)


# dann covers the reversal; mmd the all_gather path CORAL shares; both carry
# KMM-style weights, whose global weighted mean needs a psum under pmap.
@pytest.mark.parametrize("alignment_name", ["dann", "mmd"])
def test_same_parameters_on_one_device_mesh_and_pmap(alignment_name):
  assert jax.device_count() == 4
  params = _params(alignment_name)
  tx = optax.adam(0.05)
  step = da.make_step(MODEL, tx, alignment_name=alignment_name,
                      discriminator=DISC if alignment_name == "dann" else None,
                      total_steps=10)
  batches = []
  for s in range(2):
    b = _batch(10 + s)
    b["w"] = np.random.default_rng(s).uniform(0, 2, 8).astype(np.float32)
    batches.append(b)
  out = {}
  for mode in ("single", "mesh", "pmap"):
    compiled = parallel.compile_step(step, mode, donate=False)
    st = compiled.put_state(state_lib.create_train_state(params, tx))
    for b in batches:
      st, metrics = compiled(st, compiled.put_batch(b), jax.random.key(0))
    out[mode] = (compiled.get_state(st).params, compiled.metrics(metrics))
  for mode in ("mesh", "pmap"):
    chex.assert_trees_all_close(out[mode][0], out["single"][0], rtol=1e-4,
                                atol=1e-5)
    for k in ("loss", "class_loss", "align_loss", "domain_accuracy"):
      if k in out["single"][1]:
        np.testing.assert_allclose(out[mode][1][k], out["single"][1][k],
                                   rtol=1e-4, atol=1e-6, err_msg=(mode, k))
  # the update really moved the parameters (the comparison is not vacuous)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       out["single"][0], params)
  assert max(jax.tree.leaves(moved)) > 1e-3


def test_step_compiles_once():
  params = _params()
  tx = optax.sgd(0.1)
  step = da.make_step(MODEL, tx, alignment_name="dann", discriminator=DISC,
                      total_steps=10)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def traced(st, b, rng):
    return step(st, b, rng)

  st = state_lib.create_train_state(params, tx)
  for s in range(3):
    st, _ = traced(st, _batch(s), jax.random.key(0))


@pytest.mark.parametrize("alignment_name", ["dann", "mmd", "coral"])
def test_bad_batches_raise_one_clear_error(alignment_name):
  params = _params(alignment_name)
  state = _state(params)
  fn = functools.partial(da.adaptation_loss, model=MODEL,
                         alignment_name=alignment_name,
                         discriminator=DISC, total_steps=10)
  b = _batch()
  with pytest.raises(ValueError, match="differ in shape"):
    fn(params, state, dict(b, x_target=np.ones((8, 3), np.float32)), None)
  with pytest.raises(ValueError, match="empty domain"):
    fn(params, state, dict(b, x_target=np.ones((0, 2), np.float32)), None)
  with pytest.raises(ValueError, match="x_target"):
    fn(params, state, {"x": b["x"], "y": b["y"]}, None)
  bad = b["x_target"].copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    fn(params, state, dict(b, x_target=bad), None)
  with pytest.raises(ValueError, match="one weight per source example"):
    fn(params, state, dict(b, w=np.ones(3, np.float32)), None)
  with pytest.raises(ValueError, match="unknown alignment"):
    da.adaptation_loss(params, state, b, None, model=MODEL,
                       alignment_name="wasserstein")
