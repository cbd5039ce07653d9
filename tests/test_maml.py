"""MAML: the inner loop by hand, second- vs first-order meta-gradients."""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax import models
from tljax.data import episodes
from tljax.methods import maml
from tljax.methods import reptile
from tljax.train import state as state_lib


def _np_mse_grads(w, b, x, y):
  """Gradients of mean((x @ w + b - y)^2) for a 1-output linear model."""
  r = x @ w + b - y                       # (n, 1)
  n = r.size
  return 2.0 / n * x.T @ r, 2.0 / n * r.sum(0)


def test_inner_update_matches_explicit_two_steps():
  model = nn.Dense(1)
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, 1))
  b = rng.normal(size=(1,))
  x = rng.normal(size=(5, 3))
  y = rng.normal(size=(5, 1))
  params = {"kernel": jnp.asarray(w, jnp.float32),
            "bias": jnp.asarray(b, jnp.float32)}
  # Two steps with different per-step rates, written out.
  gw, gb = _np_mse_grads(w, b, x, y)
  w1, b1 = w - 0.1 * gw, b - 0.1 * gb
  gw, gb = _np_mse_grads(w1, b1, x, y)
  w2, b2 = w1 - 0.05 * gw, b1 - 0.05 * gb
  got = maml.inner_adapt(params, jnp.asarray(x, jnp.float32),
                         jnp.asarray(y, jnp.float32), model=model,
                         kind="regression", inner_lr=(0.1, 0.05),
                         inner_steps=None)
  np.testing.assert_allclose(got["kernel"], w2, rtol=1e-5)
  np.testing.assert_allclose(got["bias"], b2, rtol=1e-5)
  # The same rate twice equals inner_steps=2.
  a = maml.inner_adapt(params, x, y, model=model, kind="regression",
                       inner_lr=(0.1, 0.1), inner_steps=None)
  c = maml.inner_adapt(params, x, y, model=model, kind="regression",
                       inner_lr=0.1, inner_steps=2)
  np.testing.assert_allclose(a["kernel"], c["kernel"], rtol=1e-6)


class _Scalar(nn.Module):
  """f(x) = w * x with one scalar weight."""

  @nn.compact
  def __call__(self, x):
    return self.param("w", nn.initializers.constant(0.7), ()) * x


def test_second_and_first_order_meta_gradients_by_hand():
  model = _Scalar()
  params = {"w": jnp.asarray(0.7)}
  xs, ys = np.array([[1.0], [2.0]]), np.array([[0.5], [3.0]])
  xq, yq = np.array([[1.5], [-1.0]]), np.array([[1.0], [0.0]])
  alpha, w = 0.1, 0.7
  # Ls(w) = mean((w xs - ys)^2), Ls' = 2 mean(xs (w xs - ys)),
  # Ls'' = 2 mean(xs^2); w' = w - alpha Ls'(w); Lq'(w') likewise.
  ls1 = 2 * np.mean(xs * (w * xs - ys))
  ls2 = 2 * np.mean(xs ** 2)
  w1 = w - alpha * ls1
  lq1 = 2 * np.mean(xq * (w1 * xq - yq))
  want_second = lq1 * (1 - alpha * ls2)
  want_first = lq1
  batch = {"support_x": xs[None], "support_y": ys[None],
           "query_x": xq[None], "query_y": yq[None]}
  grads = {}
  for fo in (False, True):
    grads[fo] = jax.grad(lambda p: maml.maml_loss(  # noqa: B023
        p, None, batch, None, model=model, kind="regression",
        inner_lr=alpha, inner_steps=1, first_order=fo)[0])(params)["w"]
  np.testing.assert_allclose(grads[False], want_second, rtol=1e-5)
  np.testing.assert_allclose(grads[True], want_first, rtol=1e-5)
  # They must differ here: alpha * Ls'' = 0.5 is far from 0.
  assert abs(float(grads[False]) - float(grads[True])) > 0.1 * abs(want_first)

  # Second order equals a central finite difference of the meta-objective.
  def meta_objective(w):
    w1 = w - alpha * 2 * np.mean(xs * (w * xs - ys))
    return np.mean((w1 * xq - yq) ** 2)
  eps = 1e-5
  fd = (meta_objective(w + eps) - meta_objective(w - eps)) / (2 * eps)
  np.testing.assert_allclose(grads[False], fd, rtol=1e-4)


def test_first_and_second_order_agree_without_inner_steps():
  model = _Scalar()
  batch = {"support_x": np.ones((2, 3, 1)), "support_y": np.ones((2, 3, 1)),
           "query_x": np.full((2, 3, 1), 2.0),
           "query_y": np.zeros((2, 3, 1))}
  g = [jax.grad(lambda p: maml.maml_loss(  # noqa: B023
      p, None, batch, None, model=model, kind="regression", inner_lr=0.1,
      inner_steps=0, first_order=fo)[0])({"w": jnp.asarray(0.7)})["w"]
       for fo in (False, True)]
  # d/dw mean((2w)^2) = 8w.
  np.testing.assert_allclose(g, [5.6, 5.6], rtol=1e-6)


def test_inner_rules_freeze_leaves():
  model = nn.Dense(2)
  params = model.init(jax.random.key(0), jnp.zeros((1, 3)))["params"]
  x = jnp.ones((4, 3))
  y = jnp.array([0, 1, 0, 1])
  got = maml.inner_adapt(params, x, y, model=model, kind="classification",
                         inner_lr=0.5, inner_steps=3,
                         inner_rules=(("bias", 1.0), ("kernel", None)))
  np.testing.assert_array_equal(got["kernel"], params["kernel"])
  assert float(jnp.abs(got["bias"] - params["bias"]).max()) > 0


def test_classification_meta_batch_equals_per_task_loop():
  model = nn.Dense(3)
  params = model.init(jax.random.key(1), jnp.zeros((1, 4)))["params"]
  rng = np.random.default_rng(2)
  batch = {"support_x": rng.normal(size=(3, 6, 4)).astype(np.float32),
           "support_y": rng.integers(0, 3, (3, 6)).astype(np.int32),
           "query_x": rng.normal(size=(3, 5, 4)).astype(np.float32),
           "query_y": rng.integers(0, 3, (3, 5)).astype(np.int32)}
  loss, metrics = maml.maml_loss(params, None, batch, None, model=model,
                               kind="classification", inner_lr=0.3,
                               inner_steps=2)
  @jax.jit
  def support_ce(p, x, y):
    logp = jax.nn.log_softmax(model.apply({"params": p}, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))

  want = []
  for t in range(3):
    p = params
    for _ in range(2):  # plain gradient steps, one task at a time
      g = jax.grad(support_ce)(p, batch["support_x"][t], batch["support_y"][t])
      p = jax.tree.map(lambda a, b: a - 0.3 * b, p, g)
    want.append(float(support_ce(p, batch["query_x"][t],
                                 batch["query_y"][t])))
  np.testing.assert_allclose(loss, np.mean(want), rtol=1e-5)
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_adaptation_curve_and_sinusoid_meta_training_helps():
  model = models.Classifier(models.MLP((40, 40)), num_classes=1)
  params = model.init(jax.random.key(0), jnp.zeros((1, 1)))["params"]
  tasks = episodes.SinusoidTasks(seed=0)
  test = episodes.SinusoidTasks(seed=1).batch(0, 50, 10, 50)
  curve = jax.jit(lambda p: maml.adaptation_curve(
      p, test, model=model, kind="regression", inner_lr=0.01,
      inner_steps=3)[0])
  c0 = np.asarray(curve(params))
  assert c0.shape == (50, 4)
  # Column k is the query MSE after k plain inner steps.
  one = {k: test[k][:1] for k in ("support_x", "support_y", "query_x",
                                  "query_y")}
  p2 = maml.inner_adapt(params, one["support_x"][0], one["support_y"][0],
                        model=model, kind="regression", inner_lr=0.01,
                        inner_steps=2)
  np.testing.assert_allclose(
      c0[0, 2], np.mean((model.apply({"params": p2}, one["query_x"][0])
                         - one["query_y"][0]) ** 2), rtol=1e-4)
  tx = optax.adam(1e-3)
  step = jax.jit(maml.make_step(model, tx, kind="regression", inner_lr=0.01,
                                inner_steps=1))
  state = state_lib.create_train_state(params, tx)
  for i in range(150):
    state, m = step(state, tasks.batch(i, 8, 10, 10), jax.random.key(0))
  c1 = np.asarray(curve(state.params)).mean(0)
  # After meta-training, one inner step helps, and the adapted loss beats
  # the untrained initialisation's.
  assert c1[1] < c1[0], c1
  assert c1[1] < 0.9 * c0[:, 0].mean(), (c0.mean(0), c1)
  assert np.isfinite(float(m["pre_query_loss"]))


@pytest.mark.parametrize("kwargs,msg", [
    (dict(kind="ranking", inner_lr=0.1, inner_steps=1), "unknown task kind"),
    (dict(kind="regression", inner_lr=(0.1, 0.2), inner_steps=3),
     "one rate per step"),
    (dict(kind="regression", inner_lr=0.1, inner_steps=-1),
     "inner_steps must be >= 0"),
])
def test_bad_config_raises(kwargs, msg):
  with pytest.raises(ValueError, match=msg):
    maml.check_config(**kwargs)


def test_regression_shape_mismatch_raises():
  model = nn.Dense(1)
  p = model.init(jax.random.key(0), jnp.zeros((1, 1)))["params"]
  with pytest.raises(ValueError, match="same shape"):
    maml.inner_adapt(p, jnp.ones((4, 1)), jnp.ones((4,)), model=model,
                     kind="regression", inner_steps=1)


def test_joint_regression_loss_is_the_mse_over_every_point():
  """The jointly pretrained baseline: one MSE over all support and query
  points of all tasks, against numpy."""
  model = nn.Dense(1)
  params = model.init(jax.random.key(0), jnp.zeros((1, 1)))["params"]
  batch = episodes.SinusoidTasks(seed=2).batch(0, 3, 4, 5)
  loss, _ = maml.joint_regression_loss(params, None, batch, None, model=model)
  w = np.asarray(params["kernel"])[0, 0]
  b = np.asarray(params["bias"])[0]
  x = np.concatenate([batch["support_x"], batch["query_x"]], 1)
  y = np.concatenate([batch["support_y"], batch["query_y"]], 1)
  np.testing.assert_allclose(loss, np.mean((w * x + b - y) ** 2), rtol=1e-5)
  step = maml.make_step(model, optax.sgd(0.1), kind="regression", joint=True)
  state, m = step(state_lib.create_train_state(params, optax.sgd(0.1)), batch,
                  jax.random.key(0))
  np.testing.assert_allclose(m["loss"], loss, rtol=1e-6)
  with pytest.raises(ValueError, match="joint baseline"):
    maml.make_step(model, optax.sgd(0.1), kind="regression", joint=True,
                   inner_steps=2)


def _linear_tasks(rng):
  """Three regression tasks for a Dense(1) on 2-d inputs: 4 support and 2
  query examples each, float32."""
  batch = {"support_x": rng.normal(size=(3, 4, 2)),
           "support_y": rng.normal(size=(3, 4, 1)),
           "query_x": rng.normal(size=(3, 2, 2)),
           "query_y": rng.normal(size=(3, 2, 1))}
  return {k: v.astype(np.float32) for k, v in batch.items()}


def test_reptile_update_equals_hand_unrolled_sgd():
  """One Reptile step (outer SGD at epsilon) on a linear regressor equals
  theta + epsilon (mean_i phi_i - theta), phi_i from plain numpy SGD."""
  model = nn.Dense(1)
  rng = np.random.default_rng(3)
  w = rng.normal(size=(2, 1))
  b = rng.normal(size=(1,))
  batch = _linear_tasks(rng)
  inner_lr, steps, eps = 0.1, 3, 0.5
  phis = []
  for t in range(3):
    wt, bt = w.copy(), b.copy()
    for _ in range(steps):
      gw, gb = _np_mse_grads(wt, bt, batch["support_x"][t],
                             batch["support_y"][t])
      wt, bt = wt - inner_lr * gw, bt - inner_lr * gb
    phis.append((wt, bt))
  want_w = w + eps * (np.mean([p[0] for p in phis], 0) - w)
  want_b = b + eps * (np.mean([p[1] for p in phis], 0) - b)

  params = {"kernel": jnp.asarray(w, jnp.float32),
            "bias": jnp.asarray(b, jnp.float32)}
  tx = optax.sgd(eps)
  step = jax.jit(reptile.make_step(model, tx, kind="regression",
                                   inner_lr=inner_lr, inner_steps=steps))
  state, m = step(state_lib.create_train_state(params, tx), batch,
                  jax.random.key(0))
  np.testing.assert_allclose(state.params["kernel"], want_w, rtol=1e-5)
  np.testing.assert_allclose(state.params["bias"], want_b, rtol=1e-5)
  # The reported loss is the surrogate 1/2 ||theta - mean phi||^2.
  sq = (np.sum((w - np.mean([p[0] for p in phis], 0)) ** 2)
        + np.sum((b - np.mean([p[1] for p in phis], 0)) ** 2))
  np.testing.assert_allclose(m["loss"], 0.5 * sq, rtol=1e-4)
  assert np.isfinite(float(m["query_loss"]))

  # train_on_query: the inner SGD runs on support and query together.
  phis = []
  for t in range(3):
    xt = np.concatenate([batch["support_x"][t], batch["query_x"][t]])
    yt = np.concatenate([batch["support_y"][t], batch["query_y"][t]])
    wt, bt = w.copy(), b.copy()
    for _ in range(steps):
      gw, gb = _np_mse_grads(wt, bt, xt, yt)
      wt, bt = wt - inner_lr * gw, bt - inner_lr * gb
    phis.append((wt, bt))
  step = jax.jit(reptile.make_step(model, tx, kind="regression",
                                   inner_lr=inner_lr, inner_steps=steps,
                                   train_on_query=True))
  state, _ = step(state_lib.create_train_state(params, tx), batch,
                  jax.random.key(0))
  np.testing.assert_allclose(
      state.params["kernel"],
      w + eps * (np.mean([p[0] for p in phis], 0) - w), rtol=1e-5)
  np.testing.assert_allclose(
      state.params["bias"],
      b + eps * (np.mean([p[1] for p in phis], 0) - b), rtol=1e-5)


def _np_adam_phi(w, b, x, y, lr, steps, b1):
  """``steps`` Adam steps (Kingma & Ba, b2 = 0.999, eps = 1e-8, fresh
  moments) on mean((x @ w + b - y)^2), in numpy."""
  ps = [w.copy(), b.copy()]
  m = [np.zeros_like(p) for p in ps]
  v = [np.zeros_like(p) for p in ps]
  for t in range(1, steps + 1):
    gs = _np_mse_grads(ps[0], ps[1], x, y)
    for i, g in enumerate(gs):
      m[i] = b1 * m[i] + (1 - b1) * g
      v[i] = 0.999 * v[i] + 0.001 * g ** 2
      m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - 0.999 ** t)
      ps[i] = ps[i] - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
  return ps


@pytest.mark.parametrize("b1", [0.0, 0.9])
def test_reptile_adam_inner_loop_equals_numpy_adam(b1):
  """Reptile with inner_optimizer='adam': each task's phi is numpy Adam
  from theta with a fresh state, the outer step theta + eps (mean phi -
  theta); the test-time fine-tuning (adaptation_curve) takes the same
  steps; a frozen leaf stays put."""
  model = nn.Dense(1)
  rng = np.random.default_rng(5)
  w, b = rng.normal(size=(2, 1)), rng.normal(size=(1,))
  batch = _linear_tasks(rng)
  lr, steps, eps = 0.05, 4, 0.5
  phis = [_np_adam_phi(w, b, batch["support_x"][t], batch["support_y"][t],
                       lr, steps, b1) for t in range(3)]
  params = {"kernel": jnp.asarray(w, jnp.float32),
            "bias": jnp.asarray(b, jnp.float32)}
  tx = optax.sgd(eps)
  step = jax.jit(reptile.make_step(model, tx, kind="regression",
                                   inner_lr=lr, inner_steps=steps,
                                   inner_optimizer="adam", inner_b1=b1))
  state, _ = step(state_lib.create_train_state(params, tx), batch,
                  jax.random.key(0))
  for i, k in enumerate(("kernel", "bias")):
    want = params[k] + eps * (np.mean([p[i] for p in phis], 0) - params[k])
    np.testing.assert_allclose(state.params[k], want, rtol=1e-5, atol=1e-6)

  inner_tx = reptile.inner_transform("adam", b1)
  losses, _ = maml.adaptation_curve(params, batch, model=model,
                                    kind="regression", inner_lr=lr,
                                    inner_steps=steps, inner_tx=inner_tx)
  want = [np.mean((batch["query_x"][t] @ phis[t][0] + phis[t][1]
                   - batch["query_y"][t]) ** 2) for t in range(3)]
  np.testing.assert_allclose(losses[:, -1], want, rtol=1e-5)

  frozen = maml.inner_adapt(params, batch["support_x"][0],
                            batch["support_y"][0], model=model,
                            kind="regression", inner_lr=lr,
                            inner_steps=steps, inner_tx=inner_tx,
                            inner_rules=(("bias", None), (".*", 1.0)))
  np.testing.assert_array_equal(frozen["bias"], params["bias"])
  assert float(jnp.abs(frozen["kernel"] - params["kernel"]).max()) > 1e-3


@pytest.mark.parametrize("kwargs,msg", [
    (dict(inner_optimizer="rmsprop"), "unknown inner_optimizer"),
    (dict(inner_optimizer="adam", inner_b1=1.0), "inner_b1"),
])
def test_reptile_bad_inner_optimizer_raises(kwargs, msg):
  with pytest.raises(ValueError, match=msg):
    reptile.make_step(nn.Dense(1), optax.sgd(1.0), kind="regression",
                      inner_lr=0.1, inner_steps=2, **kwargs)


def test_metasgd_with_constant_rates_equals_maml():
  model = nn.Dense(3)
  params = model.init(jax.random.key(1), jnp.zeros((1, 4)))["params"]
  rng = np.random.default_rng(4)
  batch = {"support_x": rng.normal(size=(2, 6, 4)).astype(np.float32),
           "support_y": rng.integers(0, 3, (2, 6)).astype(np.int32),
           "query_x": rng.normal(size=(2, 5, 4)).astype(np.float32),
           "query_y": rng.integers(0, 3, (2, 5)).astype(np.int32)}
  kw = dict(model=model, kind="classification", inner_steps=2)
  (want, _), g_want = jax.jit(jax.value_and_grad(lambda p: maml.maml_loss(
      p, None, batch, None, inner_lr=0.3, **kw), has_aux=True))(params)
  meta_params = maml.init_metasgd(params, 0.3)
  (got, _), g_got = jax.jit(jax.value_and_grad(lambda p: maml.metasgd_loss(
      p, None, batch, None, **kw), has_aux=True))(meta_params)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for k in ("kernel", "bias"):
    np.testing.assert_allclose(g_got[k], g_want[k], rtol=1e-5, atol=1e-7)
  # The rates get their own (non-zero) meta-gradient.
  assert float(jnp.abs(g_got["inner_lr"]["kernel"]).max()) > 1e-4
  with pytest.raises(ValueError, match="init_metasgd"):
    maml.split_metasgd(params)


def test_metasgd_meta_gradients_by_hand():
  """f(x) = w x, one inner step w' = w - a Ls'(w): the meta-gradient in w
  is Lq'(w') (1 - a Ls''), in the rate a it is -Lq'(w') Ls'(w)."""
  model = _Scalar()
  xs, ys = np.array([[1.0], [2.0]]), np.array([[0.5], [3.0]])
  xq, yq = np.array([[1.5], [-1.0]]), np.array([[1.0], [0.0]])
  a, w = 0.1, 0.7
  ls1 = 2 * np.mean(xs * (w * xs - ys))
  ls2 = 2 * np.mean(xs ** 2)
  lq1 = 2 * np.mean(xq * ((w - a * ls1) * xq - yq))
  batch = {"support_x": xs[None], "support_y": ys[None],
           "query_x": xq[None], "query_y": yq[None]}
  params = maml.init_metasgd({"w": jnp.asarray(w)}, a)
  g = jax.grad(lambda p: maml.metasgd_loss(
      p, None, batch, None, model=model, kind="regression")[0])(params)
  np.testing.assert_allclose(g["w"], lq1 * (1 - a * ls2), rtol=1e-5)
  np.testing.assert_allclose(g["inner_lr"]["w"], -lq1 * ls1, rtol=1e-5)
  # First order drops the curvature term only; the rate's gradient stays.
  g = jax.grad(lambda p: maml.metasgd_loss(
      p, None, batch, None, model=model, kind="regression",
      first_order=True)[0])(params)
  np.testing.assert_allclose(g["w"], lq1, rtol=1e-5)
  np.testing.assert_allclose(g["inner_lr"]["w"], -lq1 * ls1, rtol=1e-5)


def _head_task(seed=0, n_way=3, shots=2, nq=4, dim=5):
  rng = np.random.default_rng(seed)
  sy = np.repeat(np.arange(n_way), shots).astype(np.int32)
  return {"support_x": rng.normal(size=(1, sy.size, dim)).astype(np.float32),
          "support_y": sy[None],
          "query_x": rng.normal(size=(1, nq, dim)).astype(np.float32),
          "query_y": rng.integers(0, n_way, (1, nq)).astype(np.int32)}


def _np_relu_mlp(p, x):
  """The one-hidden-layer MLP backbone's features, in numpy."""
  d = p["backbone"]["layer_0"]
  return np.maximum(x @ np.asarray(d["kernel"]) + np.asarray(d["bias"]), 0.0)


def _np_ce(logits, y):
  z = logits - logits.max(1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  return -np.mean(logp[np.arange(y.size), y])


def test_proto_head_starts_at_the_nearest_centroid_classifier():
  """head_init='proto' with no inner step: logits are -||f - c_k||^2 up to
  a per-query constant (numpy class means and distances)."""
  model = models.Classifier(models.MLP((6,)), num_classes=3)
  params = models.init_params(model, (5,), 0)
  task = _head_task()
  start = maml.task_head(params, task["support_x"][0], task["support_y"][0],
                         model=model, head_init="proto")
  fs = _np_relu_mlp(params, task["support_x"][0])
  fq = _np_relu_mlp(params, task["query_x"][0])
  c = np.stack([fs[task["support_y"][0] == k].mean(0) for k in range(3)])
  d2 = ((fq[:, None, :] - c[None]) ** 2).sum(-1)
  logits = np.asarray(model.apply({"params": start}, task["query_x"][0]))
  np.testing.assert_allclose(logits - logits[:, :1], -(d2 - d2[:, :1]),
                             rtol=1e-4, atol=1e-4)
  acc = maml.episode_accuracies(params, task, model=model, inner_steps=0,
                                head_init="proto")
  want = np.mean(d2.argmin(1) == task["query_y"][0])
  np.testing.assert_allclose(acc, [want])
  loss, _ = maml.maml_loss(params, None, task, None, model=model,
                           kind="classification", inner_steps=0,
                           head_init="proto")
  np.testing.assert_allclose(loss, _np_ce(-d2, task["query_y"][0]),
                             rtol=1e-4)


def test_zero_head_first_step_is_a_centred_prototype_head():
  """From a zero head the logits are uniform, so one SGD step at rate a
  gives W = a F^T (Y - 1/N) / n, b = a mean(Y - 1/N), and leaves the
  backbone where it was (its gradient is W^T(...) = 0)."""
  model = models.Classifier(models.MLP((6,)), num_classes=3)
  params = models.init_params(model, (5,), 1)
  task = _head_task(seed=1)
  sx, sy = task["support_x"][0], task["support_y"][0]
  start = maml.task_head(params, sx, sy, model=model, head_init="zero")
  adapted = maml.inner_adapt(start, sx, sy, model=model,
                             kind="classification", inner_lr=0.5,
                             inner_steps=1)
  f = _np_relu_mlp(params, sx)
  r = np.eye(3)[sy] - 1.0 / 3
  np.testing.assert_allclose(adapted["head"]["kernel"], 0.5 * f.T @ r / 6,
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(adapted["head"]["bias"], 0.5 * r.mean(0),
                             atol=1e-7)
  for a, b in zip(jax.tree.leaves(adapted["backbone"]),
                  jax.tree.leaves(params["backbone"])):
    np.testing.assert_array_equal(a, b)
  # The meta-loss is the query cross-entropy of that head, and the learned
  # head gets no meta-gradient (every task replaces it).
  fq = _np_relu_mlp(params, task["query_x"][0])
  want = _np_ce(fq @ (0.5 * f.T @ r / 6) + 0.5 * r.mean(0),
                task["query_y"][0])
  (loss, _), g = jax.value_and_grad(lambda p: maml.maml_loss(
      p, None, task, None, model=model, kind="classification", inner_lr=0.5,
      inner_steps=1, head_init="zero"), has_aux=True)(params)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert not np.any(np.asarray(g["head"]["kernel"]))


def test_proto_head_meta_gradient_flows_through_the_prototypes():
  """The meta-gradient of a backbone entry under head_init='proto' equals
  a central finite difference of the meta-loss (the head is a function of
  the backbone through the class means)."""
  model = models.Classifier(models.MLP((6,)), num_classes=3)
  params = models.init_params(model, (5,), 2)
  task = _head_task(seed=2)

  def loss(p):
    return maml.maml_loss(p, None, task, None, model=model,
                          kind="classification", inner_lr=0.1,
                          inner_steps=1, head_init="proto")[0]

  g = jax.grad(loss)(params)["backbone"]["layer_0"]["kernel"]
  k = params["backbone"]["layer_0"]["kernel"]
  i, j = np.unravel_index(np.argmax(np.abs(np.asarray(g))), k.shape)
  eps = 1e-2
  bump = lambda e: dict(params, backbone={"layer_0": dict(  # noqa: E731
      params["backbone"]["layer_0"], kernel=k.at[i, j].add(e))})
  fd = (float(loss(bump(eps))) - float(loss(bump(-eps)))) / (2 * eps)
  assert abs(float(g[i, j])) > 1e-3
  np.testing.assert_allclose(float(g[i, j]), fd, rtol=2e-2)


def test_head_init_bad_input_raises():
  model = nn.Dense(3)
  params = model.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
  x, y = jnp.zeros((3, 4)), jnp.zeros((3,), jnp.int32)
  with pytest.raises(ValueError, match="Dense 'head'"):
    maml.task_head(params, x, y, model=model, head_init="zero")
  with pytest.raises(ValueError, match="choose one of"):
    maml.task_head(params, x, y, model=model, head_init="zeros")
  with pytest.raises(ValueError, match="regression"):
    maml.check_head_init("proto", "regression")


def test_reptile_with_a_proto_head_moves_the_backbone_only():
  """Reptile from the proto head: the backbone's surrogate gradient is theta
  minus the body SGD reached from that head (unrolled here by hand with
  jax.grad of a plain cross-entropy); the unused learned head gets none."""
  model = models.Classifier(models.MLP((6,)), num_classes=3)
  params = models.init_params(model, (5,), 3)
  task = _head_task(seed=3)
  sx, sy = task["support_x"][0], task["support_y"][0]
  f = _np_relu_mlp(params, sx)
  c = np.stack([f[sy == k].mean(0) for k in range(3)])
  p = dict(params, head={"kernel": jnp.asarray(2 * c.T),
                         "bias": jnp.asarray(-(c * c).sum(1))})

  def ce(p):
    logp = jax.nn.log_softmax(model.apply({"params": p}, sx))
    return -jnp.mean(jnp.take_along_axis(logp, sy[:, None], 1))

  for _ in range(2):
    p = jax.tree.map(lambda a, g: a - 0.1 * g, p, jax.grad(ce)(p))
  g = jax.grad(lambda q: reptile.reptile_loss(
      q, None, task, None, model=model, kind="classification", inner_lr=0.1,
      inner_steps=2, head_init="proto")[0])(params)
  for a, b, t in zip(jax.tree.leaves(g["backbone"]),
                     jax.tree.leaves(params["backbone"]),
                     jax.tree.leaves(p["backbone"])):
    np.testing.assert_allclose(a, b - t, rtol=1e-4, atol=1e-6)
  assert not any(np.any(np.asarray(x)) for x in jax.tree.leaves(g["head"]))
