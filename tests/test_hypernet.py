"""The model-based learner: generated head weights and logits by hand."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax

from tljax import data
from tljax import models
from tljax.data import episodes
from tljax.methods import hypernet
from tljax.train import state as state_lib


def _episode(rng, n_way=3, k=2, nq=4, dim=5):
  return {"support_x": rng.normal(size=(n_way * k, dim)).astype(np.float32),
          "support_y": np.repeat(np.arange(n_way), k).astype(np.int32),
          "query_x": rng.normal(size=(n_way * nq, dim)).astype(np.float32),
          "query_y": np.repeat(np.arange(n_way), nq).astype(np.int32)}


def _unit(v):
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_untrained_generator_writes_class_means_and_cosine_logits():
  rng = np.random.default_rng(0)
  ep = _episode(rng)
  backbone = models.MLP((8,))
  model = hypernet.HyperNetLearner(backbone, n_way=3, init_scale=7.0)
  params = model.init(jax.random.key(0), ep["support_x"], ep["support_y"],
                      ep["query_x"])["params"]
  # Backbone features computed on their own, the linear embedding and the
  # head by hand.
  e = params["embed"]
  f = lambda x: np.asarray(backbone.apply(  # noqa: E731
      {"params": params["backbone"]}, x)) @ np.asarray(e["kernel"]) + \
      np.asarray(e["bias"])
  fs, fq = f(ep["support_x"]), f(ep["query_x"])
  means = np.stack([fs[ep["support_y"] == c].mean(0) for c in range(3)])
  want = 7.0 * _unit(fq) @ _unit(means).T
  got = hypernet.episode_logits(model, params, ep)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  # With a non-zero last layer, w_c = z_c + phi([z_c, z_c - mean z]), where
  # phi = Dense(relu(Dense(.))): check that formula too.
  g = params["generator"]
  g = dict(g, layer_1={"kernel": jnp.asarray(rng.normal(
      size=g["layer_1"]["kernel"].shape), jnp.float32),
                       "bias": g["layer_1"]["bias"]})
  params = dict(params, generator=g)
  inp = np.concatenate([means, means - means.mean(0)], -1)
  h = np.maximum(inp @ np.asarray(g["layer_0"]["kernel"])
                 + np.asarray(g["layer_0"]["bias"]), 0)
  w = means + h @ np.asarray(g["layer_1"]["kernel"]) + np.asarray(
      g["layer_1"]["bias"])
  got = hypernet.episode_logits(model, params, ep)
  np.testing.assert_allclose(got, 7.0 * _unit(fq) @ _unit(w).T, rtol=1e-4,
                             atol=1e-4)
  # The head of class 0 now depends on the other classes' support examples.
  ep2 = dict(ep, support_x=ep["support_x"].copy())
  ep2["support_x"][-1] += 3.0  # an example of class 2
  w0 = lambda e: model.apply(  # noqa: E731
      {"params": params}, model.apply({"params": params}, e["support_x"],
                                      method="features"),
      e["support_y"], method="head_weights")[0]
  assert float(jnp.abs(w0(ep) - w0(ep2)).max()) > 1e-4


def test_loss_by_hand():
  rng = np.random.default_rng(1)
  eps = [_episode(rng) for _ in range(2)]
  batch = {k: np.stack([e[k] for e in eps]) for k in eps[0]}
  model = hypernet.HyperNetLearner(models.MLP((8,)), n_way=3)
  params = model.init(jax.random.key(0), eps[0]["support_x"],
                      eps[0]["support_y"], eps[0]["query_x"])["params"]
  ces = []
  for e in eps:
    logits = np.asarray(hypernet.episode_logits(model, params, e),
                        np.float64)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ces.append(-logp[np.arange(len(e["query_y"])), e["query_y"]].mean())
  loss, metrics = hypernet.hypernet_loss(params, None, batch, None,
                                         model=model)
  np.testing.assert_allclose(loss, np.mean(ces), rtol=1e-5)
  np.testing.assert_allclose(metrics["scale"], 10.0)


def test_episodic_training_improves_held_out_accuracy():
  ds, ds_test = data.load("mnist1d"), data.load("mnist1d", "test")
  train, test = episodes.meta_split(ds, ds_test, train_classes=range(5),
                                    test_classes=range(5, 10), n_way=5,
                                    k_shot=5, n_query=5)
  model = hypernet.HyperNetLearner(models.MLP((64,)), n_way=5, hidden=32)
  ep = train.episode(0)
  params = model.init(jax.random.key(0), ep["support_x"], ep["support_y"],
                      ep["query_x"])["params"]
  acc = jax.jit(lambda p, b: hypernet.episode_accuracies(p, b, model=model))
  test_batch = test.batch(0, 100)
  before = float(acc(params, test_batch).mean())
  tx = optax.adam(1e-3)
  step = jax.jit(hypernet.make_step(model, tx))
  state = state_lib.create_train_state(params, tx)
  for i in range(100):
    state, _ = step(state, train.batch(i, 4), jax.random.key(0))
  after = float(acc(state.params, test_batch).mean())
  assert after > before + 0.1, (before, after)
