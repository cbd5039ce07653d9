"""Prototypical networks: prototypes, logits and the episodic loss by hand."""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax import data
from tljax import models
from tljax.data import episodes
from tljax.methods import protonet
from tljax.train import state as state_lib


def test_prototypes_by_hand():
  emb = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [1.0, 1.0],
                   [3.0, 3.0], [5.0, 5.0]])
  y = jnp.array([0, 0, 1, 2, 2, 2])
  np.testing.assert_allclose(protonet.prototypes(emb, y, 3),
                             [[1.0, 0.0], [0.0, 4.0], [3.0, 3.0]])


def test_logits_by_hand():
  q = jnp.array([[1.0, 1.0], [0.0, 3.0]])
  protos = jnp.array([[1.0, 0.0], [0.0, 4.0]])
  # squared distances: q0: 1, 10; q1: 10, 1.
  np.testing.assert_allclose(protonet.proto_logits(q, protos),
                             [[-1.0, -10.0], [-10.0, -1.0]], atol=1e-6)
  np.testing.assert_allclose(
      protonet.proto_logits(q, protos, distance="l2"),
      [[-1.0, -np.sqrt(10)], [-np.sqrt(10), -1.0]], rtol=1e-6)


class _Linear(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(2, use_bias=False)(x)


def test_loss_by_hand():
  model = _Linear()
  w = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], np.float32)
  params = {"Dense_0": {"kernel": jnp.asarray(w)}}
  rng = np.random.default_rng(0)
  batch = {"support_x": rng.normal(size=(2, 4, 3)).astype(np.float32),
           "support_y": np.array([[0, 0, 1, 1], [1, 0, 1, 0]], np.int32),
           "query_x": rng.normal(size=(2, 3, 3)).astype(np.float32),
           "query_y": np.array([[0, 1, 1], [1, 1, 0]], np.int32)}
  ces, accs = [], []
  for t in range(2):
    s, q = batch["support_x"][t] @ w, batch["query_x"][t] @ w
    ys, yq = batch["support_y"][t], batch["query_y"][t]
    c = np.stack([s[ys == k].mean(0) for k in range(2)])
    logits = -((q[:, None, :] - c[None]) ** 2).sum(-1)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ces.append(-logp[np.arange(3), yq].mean())
    accs.append((logits.argmax(1) == yq).mean())
  loss, metrics = protonet.protonet_loss(params, None, batch, None,
                                         model=model, n_way=2)
  np.testing.assert_allclose(loss, np.mean(ces), rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(accs))
  got = protonet.episode_accuracies(params, batch, model=model, n_way=2)
  np.testing.assert_allclose(got, accs)
  got = protonet.centroid_accuracies(
      protonet.model_embed_fn(model, params), batch, 2)
  np.testing.assert_allclose(got, accs)


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="must match"):
    protonet.prototypes(jnp.zeros((4, 2)), jnp.zeros(3, jnp.int32), 2)
  with pytest.raises(ValueError, match="last \\(feature\\) dimension"):
    protonet.proto_logits(jnp.zeros((4, 2)), jnp.zeros((3, 5)))


def test_episodic_training_improves_held_out_accuracy():
  """mnist1d: meta-train on digits 0-4, test 5-way 5-shot on digits 5-9."""
  ds, ds_test = data.load("mnist1d"), data.load("mnist1d", "test")
  train, test = episodes.meta_split(ds, ds_test, train_classes=range(5),
                                    test_classes=range(5, 10), n_way=5,
                                    k_shot=5, n_query=5)
  model = models.MLP((64,))
  params = model.init(jax.random.key(0), jnp.zeros((1, 40)))["params"]
  acc = jax.jit(lambda p, b: protonet.episode_accuracies(p, b, model=model,
                                                         n_way=5))
  test_batch = test.batch(0, 100)
  before = float(acc(params, test_batch).mean())
  tx = optax.adam(1e-3)
  step = jax.jit(protonet.make_step(model, tx, n_way=5))
  state = state_lib.create_train_state(params, tx)
  for i in range(100):
    state, _ = step(state, train.batch(i, 4), jax.random.key(0))
  after = float(acc(state.params, test_batch).mean())
  assert after > before + 0.1, (before, after)
