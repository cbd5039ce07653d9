"""Freezing, per-rule learning rates and schedules, checked by hand."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax import models
from tljax import optim
from tljax.methods import supervised
from tljax.train import state as state_lib


def _quadratic_params():
  return {"backbone": {"layer_0": {"w": jnp.array([1.0, -2.0])},
                       "layer_1": {"w": jnp.array([3.0])}},
          "head": {"w": jnp.array([0.5, 0.5])}}


def test_sgd_multipliers_and_frozen_by_hand():
  params = _quadratic_params()
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optim.make_optimizer(params, name="sgd", learning_rate=0.1, lr_rules=[
      ("backbone/layer_0/.*", None), ("backbone/.*", 0.5), (".*", 1.0)])
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  # frozen: unchanged; layer_1: w - 0.1*0.5*1; head: w - 0.1*1.
  np.testing.assert_array_equal(new["backbone"]["layer_0"]["w"], [1.0, -2.0])
  np.testing.assert_allclose(new["backbone"]["layer_1"]["w"], [2.95])
  np.testing.assert_allclose(new["head"]["w"], [0.4, 0.4])


def test_adam_multiplier_scales_the_adam_update():
  params = {"a": jnp.array([1.0]), "b": jnp.array([1.0])}
  grads = {"a": jnp.array([0.3]), "b": jnp.array([0.3])}
  tx = optim.make_optimizer(params, name="adam", learning_rate=0.01,
                            lr_rules=[("a", 0.1), ("b", 1.0)])
  updates, _ = tx.update(grads, tx.init(params), params)
  # First adam step is -lr * sign(g) (bias-corrected m/sqrt(v) = 1).
  np.testing.assert_allclose(updates["b"], [-0.01], rtol=1e-4)
  np.testing.assert_allclose(updates["a"], [-0.001], rtol=1e-4)


def test_frozen_leaves_have_no_optimizer_state():
  params = _quadratic_params()
  tx = optim.make_optimizer(params, name="adam", lr_rules=[
      ("backbone/.*", None), (".*", 1.0)])
  opt_state = tx.init(params)
  leaves = jax.tree.leaves(opt_state)
  # adam keeps mu and nu for the head only (2 floats each) plus counters.
  sizes = sorted(np.size(x) for x in leaves)
  assert sum(s for s in sizes if s > 1) == 4, sizes
  assert all(np.size(x) in (1, 2) for x in leaves)


def test_rules_errors():
  params = _quadratic_params()
  with pytest.raises(ValueError, match="no rule covers"):
    optim.make_optimizer(params, lr_rules=[("backbone/.*", None)])
  with pytest.raises(ValueError, match="match no parameter"):
    optim.make_optimizer(params, lr_rules=[("heads/.*", None), (".*", 1.0)])
  with pytest.raises(ValueError, match="freeze every parameter"):
    optim.make_optimizer(params, lr_rules=[(".*", None)])
  with pytest.raises(ValueError, match="unknown optimizer"):
    optim.make_optimizer(params, name="lion")
  with pytest.raises(ValueError, match="unknown schedule"):
    optim.make_optimizer(params, schedule="step")


def test_schedules():
  s = optim.make_schedule(1.0, "cosine", total_steps=110, warmup_steps=10)
  np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  s = optim.make_schedule(2.0, "linear", total_steps=10, end_factor=0.5)
  np.testing.assert_allclose([s(0), s(10)], [2.0, 1.0])


def test_frozen_layers_bit_identical_after_training():
  model = models.Classifier(backbone=models.MLP(features=(16, 16)),
                            num_classes=3)
  params = model.init(jax.random.key(0), jnp.zeros((1, 5)))["params"]
  tx = optim.make_optimizer(params, name="adamw", learning_rate=1e-2,
                            grad_clip_norm=1.0,
                            lr_rules=[("backbone/layer_0/.*", None),
                                      (".*", 1.0)])
  state = state_lib.create_train_state(params, tx)
  step = jax.jit(functools.partial(
      state_lib.train_step, tx=tx, loss_fn=functools.partial(
          supervised.classification_loss, model=model)))
  rng = np.random.default_rng(0)
  for _ in range(5):
    batch = {"x": rng.normal(size=(8, 5)).astype(np.float32),
             "y": rng.integers(0, 3, 8)}
    state, _ = step(state, batch, jax.random.key(1))
  chex.assert_trees_all_equal(state.params["backbone"]["layer_0"],
                              params["backbone"]["layer_0"])
  assert not np.allclose(state.params["backbone"]["layer_1"]["kernel"],
                         params["backbone"]["layer_1"]["kernel"])


def test_weight_decay_of_momentum_sgd_is_torchs_coupled_l2():
  # torch.optim.SGD(lr, momentum=m, weight_decay=wd) by hand:
  # g' = g + wd p;  buf = m buf + g';  p -= lr buf
  p0 = {"w": jnp.array([1.0, -2.0])}
  g = {"w": jnp.array([0.5, 0.25])}
  lr, m, wd = 0.1, 0.9, 0.01
  tx = optim.make_optimizer(p0, name="momentum", learning_rate=lr,
                            momentum=m, weight_decay=wd)
  state, p, buf = tx.init(p0), np.array([1.0, -2.0]), np.zeros(2)
  params = p0
  for _ in range(3):
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    buf = m * buf + (np.array([0.5, 0.25]) + wd * p)
    p = p - lr * buf
  np.testing.assert_allclose(params["w"], p, rtol=1e-6)
  # no decay unless asked for (the default)
  tx = optim.make_optimizer(p0, name="sgd", learning_rate=lr)
  updates, _ = tx.update(g, tx.init(p0), p0)
  np.testing.assert_allclose(updates["w"], -lr * np.array([0.5, 0.25]))
