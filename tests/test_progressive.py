"""Progressive networks: the column equations against numpy, frozen earlier
columns bit for bit, gradients into the laterals, and the dependence of the
new column on the old ones."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import optim
from tljax import params as params_lib
from tljax.methods import progressive as prog
from tljax.models.progressive import ProgressiveNet
from tljax.train import state as state_lib


def _net(**kw):
  kw = dict(num_outputs=(3, 4), features=(6, 5), adapter_dim=2) | kw
  return ProgressiveNet(**kw)


def _params(net, shape=(7,), seed=0):
  """Random parameters of the right shapes (numpy-filled: compiling flax's
  initialisers for every test net would dominate this file's run time)."""
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(
      (1,) + shape)))["params"]
  rng = np.random.default_rng(seed)
  # Positive biases keep the small relu layers alive for the gradient tests.
  return params_lib.tree_map_with_names(lambda n, s: jnp.asarray(
      np.abs(rng.normal(size=s.shape)) * 0.1 + 0.1 if n.endswith("bias")
      else 0.5 * rng.normal(size=s.shape), s.dtype), shapes)


def _np_forward(p, x, num_columns):
  """Rusu et al.'s equations in numpy, for dense columns with adapters."""
  relu = lambda z: np.maximum(z, 0)  # noqa: E731
  dense = lambda q, h: h @ q["kernel"] + q.get("bias", 0)  # noqa: E731
  p = jax.tree.map(np.asarray, p)
  acts, outs = [], []
  for k in range(num_columns):
    c = p[f"columns_{k}"]
    h, mine = x, []
    n_layers = len([n for n in c if n.startswith("layer_")])
    for i in range(n_layers):
      z = dense(c[f"layer_{i}"], h)
      if k > 0 and i > 0:
        lat = c[f"lateral_{i}"]
        prev = np.concatenate([acts[j][i - 1] for j in range(k)], -1)
        z = z + dense(lat["U"], relu(dense(lat["V"], lat["alpha"] * prev)))
      h = relu(z)
      mine.append(h)
    out = dense(c["head"], h)
    if k > 0:
      lat = c["lateral_head"]
      prev = np.concatenate([acts[j][-1] for j in range(k)], -1)
      out = out + dense(lat["U"], relu(dense(lat["V"], lat["alpha"] * prev)))
    acts.append(mine)
    outs.append(out)
  return outs


def test_parameter_names_and_shapes():
  net = _net(num_outputs=(3, 4, 2))
  p = _params(net)
  assert sorted(p) == ["columns_0", "columns_1", "columns_2"]
  assert sorted(p["columns_0"]) == ["head", "layer_0", "layer_1"]
  assert sorted(p["columns_2"]) == ["head", "lateral_1", "lateral_head",
                                    "layer_0", "layer_1"]
  # Column 2's adapter reads columns 0 and 1 (2 x 6 units) through V.
  assert p["columns_2"]["lateral_1"]["V"]["kernel"].shape == (12, 2)
  assert p["columns_2"]["lateral_1"]["U"]["kernel"].shape == (2, 5)
  assert p["columns_2"]["head"]["kernel"].shape == (5, 2)


def test_forward_matches_numpy_equations():
  net = _net(num_outputs=(3, 4, 2))
  p = _params(net, seed=1)
  # Non-default alphas so that the scalar is exercised.
  p = params_lib.tree_map_with_names(
      lambda n, v: v * 0.5 + 0.3 if n.endswith("alpha") else v, p)
  x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
  ref = _np_forward(p, x, 3)
  outs = net.apply({"params": p}, x, method="all_logits")
  for k in range(3):
    np.testing.assert_allclose(outs[k], ref[k], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.apply({"params": p}, x, column=k), ref[k],
                               rtol=1e-5, atol=1e-5)


def test_new_column_depends_on_old_and_not_the_reverse():
  net = _net()
  p = _params(net)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 7)), jnp.float32)
  out1 = net.apply({"params": p}, x)
  out0 = net.apply({"params": p}, x, column=0)
  moved0 = jax.tree.map(lambda v: v + 0.5, p["columns_0"])
  p_old_moved = dict(p, columns_0=moved0)
  assert not np.allclose(net.apply({"params": p_old_moved}, x), out1)
  # With the laterals' U at zero the old column has no say.
  no_lat = params_lib.tree_map_with_names(
      lambda n, v: jnp.zeros_like(v) if "lateral" in n and "/U/" in n else v,
      p)
  np.testing.assert_allclose(
      net.apply({"params": no_lat}, x),
      net.apply({"params": dict(no_lat, columns_0=moved0)}, x), rtol=1e-6)
  # Column 0 never reads column 1.
  moved1 = dict(p, columns_1=jax.tree.map(lambda v: v + 0.5, p["columns_1"]))
  np.testing.assert_array_equal(net.apply({"params": moved1}, x, column=0),
                                out0)


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return {"x": rng.normal(size=(n, 7)).astype(np.float32),
          "y": rng.integers(0, 4, n).astype(np.int32)}


def test_laterals_get_gradient_old_column_none():
  net = _net()
  p = _params(net)
  grads = jax.jit(jax.grad(lambda q: prog.column_loss(
      q, None, _batch(), None, model=net)[0]))(p)
  for name, g in zip(params_lib.leaf_names(grads), jax.tree.leaves(grads)):
    if name.startswith("columns_0/"):
      assert not np.any(np.asarray(g)), name
    elif "lateral" in name or name.startswith("columns_1/"):
      assert np.any(np.asarray(g)), f"no gradient reaches {name}"


def test_earlier_columns_bit_identical_after_training_new_column():
  source = ProgressiveNet(num_outputs=(3,), features=(6, 5), adapter_dim=2)
  p0 = _params(source)
  net, params = prog.add_column(source, p0, num_outputs=4, example_shape=(7,),
                                seed=3)
  chex.assert_trees_all_equal(params["columns_0"], p0["columns_0"])
  # adamw's weight decay would move every leaf the optimizer touches, so
  # only the frozen mask keeps column 0 still (stop_gradient alone would
  # not).
  tx = optim.make_optimizer(params, name="adamw", learning_rate=1e-2,
                            weight_decay=0.1,
                            lr_rules=prog.freeze_earlier_rules(net))
  step = jax.jit(functools.partial(
      state_lib.train_step, tx=tx,
      loss_fn=functools.partial(prog.column_loss, model=net)))
  state = state_lib.create_train_state(params, tx)
  for i in range(5):
    state, m = step(state, _batch(seed=i), jax.random.key(0))
  chex.assert_trees_all_equal(state.params["columns_0"], p0["columns_0"])
  for name, a, b in zip(params_lib.leaf_names(params["columns_1"]),
                        jax.tree.leaves(params["columns_1"]),
                        jax.tree.leaves(state.params["columns_1"])):
    assert not np.array_equal(a, b), f"columns_1/{name} did not train"
  assert np.isfinite(float(m["loss"]))


def test_freeze_rules_and_add_column_errors():
  net = _net(num_outputs=(3, 4, 2))
  rules = prog.freeze_earlier_rules(net)
  frozen = optim.frozen_mask(_params(net), rules)
  for name, f in zip(params_lib.leaf_names(frozen), jax.tree.leaves(frozen)):
    assert f == (not name.startswith("columns_2/")), name
  one = ProgressiveNet(num_outputs=(3,), features=(6, 5))
  assert prog.freeze_earlier_rules(one) == [(".*", 1.0)]
  # Parameters of another architecture cannot seed the earlier columns.
  wrong = _params(ProgressiveNet(num_outputs=(3,), features=(8, 5)))
  with pytest.raises(ValueError, match="shape mismatch"):
    prog.add_column(one, wrong, num_outputs=4, example_shape=(7,), seed=0)


def test_conv_columns_and_single_column_baseline():
  net = ProgressiveNet(num_outputs=(3, 4), features=(8,),
                       conv_channels=(4, 4), kernel_size=3, adapter_dim=2)
  p = _params(net, shape=(16,))
  lat = p["columns_1"]["lateral_1"]
  assert lat["U"]["kernel"].shape == (3, 2, 4)  # a conv like layer_1
  assert lat["V"]["kernel"].shape == (4, 2)     # 1x1 reduction
  x = jnp.ones((2, 16))
  assert jax.eval_shape(net.apply, {"params": p}, x).shape == (2, 4)
  single, sp = prog.single_column_from(net, p, 1, num_outputs=5,
                                       example_shape=(16,), seed=0)
  assert sorted(sp["columns_0"]) == ["head", "layer_0", "layer_1", "layer_2"]
  chex.assert_trees_all_equal(sp["columns_0"]["layer_1"],
                              p["columns_1"]["layer_1"])
  assert jax.eval_shape(single.apply, {"params": sp}, x).shape == (2, 5)
