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
from tljax.losses import alignment
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
  if alignment_name in da.ADVERSARIAL:
    params = da.add_discriminator(params, MODEL, DISC, (2,), 1,
                                  alignment_name=alignment_name)
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
# KMM-style weights, whose global weighted mean needs a psum under pmap;
# self_training's pseudo-labels (threshold 0: every example) come from the
# probabilities aligned to the global batch's mean.
@pytest.mark.parametrize("alignment_name", ["dann", "mmd", "cdan_e",
                                            "self_training"])
def test_same_parameters_on_one_device_mesh_and_pmap(alignment_name):
  assert jax.device_count() == 4
  params = _params(alignment_name)
  tx = optax.adam(0.05)
  extra = ({"pseudo_threshold": 0.0} if alignment_name == "self_training"
           else {})
  step = da.make_step(MODEL, tx, alignment_name=alignment_name,
                      discriminator=DISC if "disc" in params else None,
                      total_steps=10, **extra)
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


@pytest.mark.parametrize("alignment_name", ["dann", "mmd", "coral", "cdan",
                                            "mcc", "self_training"])
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


# ------------------------------------------------ CDAN, MCC, self-training
def _np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_entropy(p):
  return -(p * np.log(p + 1e-5)).sum(-1)


def _np_mlp(params, x):
  """A numpy forward pass of ``discriminator``'s MLP + one-logit head."""
  x = np.asarray(x, np.float64)
  layers = params["backbone"]
  for i in range(len(layers)):
    w = layers[f"layer_{i}"]
    x = np.maximum(x @ np.asarray(w["kernel"], np.float64)
                   + np.asarray(w["bias"], np.float64), 0)
  h = params["head"]
  return (x @ np.asarray(h["kernel"], np.float64)
          + np.asarray(h["bias"], np.float64))[:, 0]


def _np_weighted_bce(d, label, w):
  return np.sum(w * np.array([_np_bce(v, label) for v in d])) / np.sum(w)


def test_multilinear_maps_against_numpy():
  rng = np.random.default_rng(0)
  f = rng.normal(size=(5, 3)).astype(np.float32)
  g = _np_softmax(rng.normal(size=(5, 4))).astype(np.float32)
  ref = np.stack([np.outer(f[i], g[i]).ravel() for i in range(5)])
  np.testing.assert_allclose(alignment.multilinear_map(f, g), ref,
                             rtol=1e-6)
  # the randomized map's inner products estimate the full map's:
  # E <T(f,g), T(f',g')> = <f, f'> <g, g'> (Long et al., 2018, eq. (5))
  t = np.asarray(alignment.randomized_multilinear_map(f, g, dim=200_000),
                 np.float64)
  np.testing.assert_allclose(t @ t.T, ref @ ref.T.astype(np.float64),
                             rtol=0.05, atol=0.02)
  # cdan_map switches to the randomized map above max_dim
  assert da.cdan_map(f, g, max_dim=12).shape == (5, 12)
  assert da.cdan_map(f, g, max_dim=11, random_dim=7).shape == (5, 7)


@pytest.mark.parametrize("alignment_name", ["cdan", "cdan_e"])
def test_cdan_loss_against_numpy(alignment_name):
  """The domain loss from numpy (softmax, outer product, the domain
  classifier's MLP, entropy-weighted BCE); the head gets no gradient from
  it (the predictions are detached, as in TLlib)."""
  params = models.init_params(MODEL, (2,), 0)
  params = da.add_discriminator(params, MODEL, DISC, (2,), 1,
                                alignment_name=alignment_name)
  assert params["disc"]["backbone"]["layer_0"]["kernel"].shape == (16, 8)
  batch = _batch(4)
  state = _state(params, step=30)
  fn = functools.partial(da.adaptation_loss, model=MODEL,
                         alignment_name=alignment_name, discriminator=DISC,
                         total_steps=100)
  (loss, m), g = jax.value_and_grad(fn, has_aux=True)(
      params, state, batch, None)
  v = {"params": da.classifier_params(params)}
  x = np.concatenate([batch["x"], batch["x_target"]])
  h = np.asarray(MODEL.apply(v, x, method="features"), np.float64)
  p = _np_softmax(MODEL.apply(v, x))
  t = np.stack([np.outer(h[i], p[i]).ravel() for i in range(16)])
  d = _np_mlp(params["disc"], t)
  w = (1 + np.exp(-_np_entropy(p)) if alignment_name == "cdan_e"
       else np.ones(16))
  ref = 0.5 * (_np_weighted_bce(d[:8], 0, w[:8])
               + _np_weighted_bce(d[8:], 1, w[8:]))
  np.testing.assert_allclose(m["align_loss"], ref, rtol=1e-4)
  np.testing.assert_allclose(loss, m["class_loss"] + ref, rtol=1e-4)

  def class_only(p):
    return optax.softmax_cross_entropy_with_integer_labels(
        MODEL.apply({"params": da.classifier_params(p)}, batch["x"]),
        batch["y"]).mean()

  chex.assert_trees_all_close(g["head"], jax.grad(class_only)(params)["head"],
                              rtol=1e-5, atol=1e-7)


def test_cdan_step_uses_the_randomized_map_when_large():
  params = da.add_discriminator(models.init_params(MODEL, (2,), 0), MODEL,
                                DISC, (2,), 1, alignment_name="cdan",
                                cdan_max_dim=8, cdan_random_dim=6)
  assert params["disc"]["backbone"]["layer_0"]["kernel"].shape == (6, 8)
  loss, m = da.adaptation_loss(params, _state(params), _batch(), None,
                               model=MODEL, alignment_name="cdan",
                               discriminator=DISC, cdan_max_dim=8,
                               cdan_random_dim=6)
  assert np.isfinite(float(loss)) and 0 <= float(m["domain_accuracy"]) <= 1


def _np_mcc(logits, t):
  """Jin et al. (2020), eqs. (1)-(7), written out with loops."""
  y = _np_softmax(np.asarray(logits, np.float64) / t)
  n, c = y.shape
  h = _np_entropy(y)
  w = n * (1 + np.exp(-h)) / np.sum(1 + np.exp(-h))
  conf = np.zeros((c, c))
  for j in range(c):
    for k in range(c):
      conf[j, k] = sum(y[i, j] * w[i] * y[i, k] for i in range(n))
  conf = conf / conf.sum(1, keepdims=True)
  return sum(conf[j, k] for j in range(c) for k in range(c) if j != k) / c


def test_mcc_loss_against_numpy_and_extremes():
  logits = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32) * 3
  for t in (1.0, 2.5):
    np.testing.assert_allclose(alignment.mcc_loss(logits, temperature=t),
                               _np_mcc(logits, t), rtol=1e-5)
  # confident, one class per example: no confusion; uniform: (C - 1) / C
  confident = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1]] * 200
  assert float(alignment.mcc_loss(confident)) < 1e-6
  np.testing.assert_allclose(alignment.mcc_loss(np.zeros((5, 4))), 0.75,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="temperature"):
    alignment.mcc_loss(logits, temperature=0.0)
  # in the step: on the target logits, times lam
  params = _params("mcc")
  batch = _batch(5)
  loss, m = da.adaptation_loss(params, _state(params, step=100), batch, None,
                               model=MODEL, alignment_name="mcc",
                               total_steps=100, schedule="constant")
  zt = MODEL.apply({"params": params}, batch["x_target"])
  np.testing.assert_allclose(m["align_loss"], _np_mcc(zt, 2.5), rtol=1e-4)
  np.testing.assert_allclose(loss, m["class_loss"] + m["align_loss"],
                             rtol=1e-5)


@pytest.mark.parametrize("aligned", [False, True])
def test_self_training_against_numpy_with_stopped_pseudo_labels(aligned):
  params = _params("self_training")
  batch = _batch(6)
  zt = np.asarray(MODEL.apply({"params": params}, batch["x_target"]))
  p = _np_softmax(zt)
  if aligned:
    # ReMixMatch's distribution alignment to a uniform prior, by hand.
    p = p / p.mean(0, keepdims=True)
    p = p / p.sum(1, keepdims=True)
  thr = float(np.median(p.max(1)))  # about half the examples pass
  fn = functools.partial(da.adaptation_loss, model=MODEL,
                         alignment_name="self_training", total_steps=10,
                         schedule="constant", pseudo_threshold=thr,
                         pseudo_alignment=aligned)
  (loss, m), g = jax.value_and_grad(fn, has_aux=True)(
      params, _state(params), batch, None)
  labels, mask = p.argmax(1), (p.max(1) >= thr).astype(np.float64)
  assert 0 < mask.sum() < 8
  # The loss is on the model's own probabilities, the labels aligned ones.
  ce = -np.log(_np_softmax(zt)[np.arange(8), labels])
  np.testing.assert_allclose(m["align_loss"], np.mean(mask * ce), rtol=1e-5)
  assert float(m["pseudo_label_fraction"]) == mask.mean()

  # The gradient is that of a loss whose labels and mask are constants.
  def fixed(pp):
    z = MODEL.apply({"params": pp}, batch["x"])
    zt = MODEL.apply({"params": pp}, batch["x_target"])
    cs = optax.softmax_cross_entropy_with_integer_labels(z, batch["y"])
    ct = optax.softmax_cross_entropy_with_integer_labels(zt, labels)
    return cs.mean() + jnp.mean(mask * ct)

  np.testing.assert_allclose(loss, fixed(params), rtol=1e-5)
  chex.assert_trees_all_close(g, jax.grad(fixed)(params), rtol=1e-4,
                              atol=1e-7)


# ------------------------------------------------------------- bottleneck
def test_bottleneck_is_dense_batchnorm_relu_over_both_domains():
  model = da.with_bottleneck(MODEL, 4)
  params, ms = models.init_variables(model, (2,), 0)
  assert sorted(params) == ["backbone", "bottleneck", "head"]
  batch = _batch(7)
  state = state_lib.create_train_state(params, optax.sgd(0.1),
                                       model_state=ms)
  _, (m, new_ms) = da.adaptation_loss(params, state, batch, None,
                                      model=model, alignment_name="mmd",
                                      total_steps=10)
  x = np.concatenate([batch["x"], batch["x_target"]]).astype(np.float64)
  w0 = params["backbone"]["layer_0"]
  hb = np.maximum(x @ np.asarray(w0["kernel"]) + np.asarray(w0["bias"]), 0)
  dense = params["bottleneck"]["dense"]
  z = hb @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
  mu, var = z.mean(0), z.var(0)
  bn = params["bottleneck"]["bn"]
  f = np.maximum((z - mu) / np.sqrt(var + 1e-5) * np.asarray(bn["scale"])
                 + np.asarray(bn["bias"]), 0)
  # MMD on these features, computed as in the numpy test above
  d2 = ((f[:, None] - f[None]) ** 2).sum(-1)
  sigma2 = d2.sum() / (16 * 15)
  k = np.mean([np.exp(-d2 / (sigma2 * 2.0 ** q)) for q in (-2, -1, 0, 1, 2)],
              0)
  ref = k[:8, :8].mean() + k[8:, 8:].mean() - 2 * k[:8, 8:].mean()
  np.testing.assert_allclose(m["align_loss"], ref, rtol=1e-3, atol=1e-6)
  # running statistics: PyTorch's momentum 0.1 (unbiased variance is not
  # used by flax: the biased one, as here)
  stats = new_ms["batch_stats"]["bottleneck"]["bn"]
  np.testing.assert_allclose(stats["mean"], 0.1 * mu, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var, rtol=1e-4)


def test_annealed_learning_rate():
  from tljax import optim  # pylint: disable=g-import-not-at-top
  sched = optim.make_schedule(0.01, "annealed", total_steps=100)
  for s in (0, 30, 100, 200):
    p = min(s / 100, 1.0)
    np.testing.assert_allclose(sched(s), 0.01 / (1 + 10 * p) ** 0.75,
                               rtol=1e-6)


# ------------------------------------------------------------------- ADDA
def test_adda_loss_against_numpy_and_who_gets_which_gradient():
  model = da.with_bottleneck(MODEL, 4)
  src, ms = models.init_variables(model, (2,), 0)
  params = da.adda_params(src, DISC, 1, model=model, example_shape=(2,),
                          model_state=ms)
  assert sorted(params) == ["backbone", "bottleneck", "disc", "head",
                            "target_backbone"]
  assert sorted(params["target_backbone"]) == ["backbone", "bottleneck"]
  # the target encoder starts as the source one, but moves apart
  params["target_backbone"] = jax.tree.map(
      lambda a: a + 0.1, params["target_backbone"])
  batch = _batch(8)
  state = state_lib.create_train_state(
      params, optax.sgd(0.1), model_state=ms,
      extra={"source_model_state": ms})
  fn = functools.partial(da.adda_loss, model=model, discriminator=DISC)
  (loss, (m, new_ms)), g = jax.value_and_grad(fn, has_aux=True)(
      params, state, batch, None)
  assert set(new_ms) == {"batch_stats"}  # the target encoder's, updated
  hs = models.apply(model, da.classifier_params(params), batch["x"],
                    model_state=ms, method="features")
  ht = models.apply_train(model, da.adda_target_classifier(params),
                          batch["x_target"], model_state=ms,
                          method="features")[0]
  ds = _np_mlp(params["disc"], hs)
  dt = _np_mlp(params["disc"], ht)
  d_ref = 0.5 * (np.mean([_np_bce(v, 0) for v in ds])
                 + np.mean([_np_bce(v, 1) for v in dt]))
  g_ref = np.mean([_np_bce(v, 0) for v in dt])   # inverted label
  np.testing.assert_allclose(m["align_loss"], d_ref, rtol=1e-4)
  np.testing.assert_allclose(m["target_encoder_loss"], g_ref, rtol=1e-4)
  np.testing.assert_allclose(loss, d_ref + g_ref, rtol=1e-4)
  # the source classifier is frozen; each player only gets its own loss
  for k in ("backbone", "bottleneck", "head"):
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g[k])) == 0

  def d_only(dp):
    apply = lambda h: DISC.apply({"params": dp}, h)[:, 0]  # noqa: E731
    return alignment.domain_classification_loss(apply(hs), apply(ht))

  def enc_only(tb):
    h = models.apply_train(model, {**tb, "head": params["head"]},
                           batch["x_target"], model_state=ms,
                           method="features")[0]
    d = DISC.apply({"params": params["disc"]}, h)[:, 0]
    return optax.sigmoid_binary_cross_entropy(d, 0.0).mean()

  chex.assert_trees_all_close(g["disc"], jax.grad(d_only)(params["disc"]),
                              rtol=1e-4, atol=1e-7)
  chex.assert_trees_all_close(
      g["target_backbone"], jax.grad(enc_only)(params["target_backbone"]),
      rtol=1e-4, atol=1e-7)
