"""BatchNorm state through the step shape: updated in training mode (against
an independent calculation), exact under a mesh, averaged under pmap,
frozen on request, checkpointed and restored, one pass over source and
target for domain adaptation; and every method family training a small
ResNet on tiny images."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax import data as data_lib
from tljax import models
from tljax.data import episodes
from tljax.methods import distillation
from tljax.methods import domain_adaptation as da
from tljax.methods import features as features_lib
from tljax.methods import finetune
from tljax.methods import hypernet
from tljax.methods import maml
from tljax.methods import metric_learning
from tljax.methods import multitask
from tljax.methods import protonet
from tljax.methods import self_taught
from tljax.methods import supervised
from tljax.methods import zero_shot
from tljax.train import checkpoint
from tljax.train import parallel
from tljax.train import state as state_lib
from tljax.train import trainer as trainer_lib

SHAPE = (8, 8, 3)


def _resnet(width=4, stages=(1,)):
  # Small ResNets compile in seconds, ResNet-18 in tens of seconds per
  # test. One stage (stem + a block) for the method families; the
  # BatchNorm-mechanics tests add a downsampling stage with its shortcut.
  return models.ResNet(block="basic", stage_sizes=stages, width=width,
                       small_inputs=True)


def _data(n=32, seed=0, classes=4):
  rng = np.random.default_rng(seed)
  return {"x": rng.normal(1.0, 2.0, size=(n,) + SHAPE).astype(np.float32),
          "y": rng.integers(0, classes, n).astype(np.int32)}


def _stem_pre_bn(params, x):
  """The stem convolution's output, computed without flax: the activations
  the stem BatchNorm normalises."""
  k = params["backbone"]["stem"]["conv"]["kernel"]
  return jax.lax.conv_general_dilated(
      jnp.asarray(x), k, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _classifier_state(tx=None, stages=(1,)):
  model = models.Classifier(_resnet(stages=stages), num_classes=4)
  params, ms = models.init_variables(model, SHAPE, 0)
  tx = tx or optax.sgd(0.1)
  return model, state_lib.create_train_state(params, tx, model_state=ms), tx


def test_training_step_updates_the_running_statistics():
  model, state, tx = _classifier_state(stages=(1, 1))
  assert sorted(state.model_state) == ["batch_stats"]
  batch = _data()
  new, _ = jax.jit(supervised.make_step(model, tx))(state, batch,
                                                     jax.random.key(0))
  mean = new.model_state["batch_stats"]["backbone"]["stem"]["bn"]["mean"]
  # flax/torch momentum 0.1 from the initial mean 0: 0.1 * the batch mean.
  want = 0.1 * np.asarray(_stem_pre_bn(state.params, batch["x"])).mean(
      (0, 1, 2))
  np.testing.assert_allclose(mean, want, rtol=1e-4, atol=1e-6)
  # The statistics are not parameters: nothing differentiates them.
  assert "batch_stats" not in new.params
  # Inference uses the running statistics: two calls agree, and a
  # different batch does not change one example's output.
  x = batch["x"][:4]
  a = models.apply(model, new.params, x, model_state=new.model_state)
  b = models.apply(model, new.params, np.concatenate([x, batch["x"][4:8]]),
                   model_state=new.model_state)[:4]
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_freeze_bn_keeps_the_statistics_and_uses_them():
  model, state, tx = _classifier_state()
  step = jax.jit(supervised.make_step(model, tx, freeze_bn=True))
  new, _ = step(state, _data(), jax.random.key(0))
  chex.assert_trees_all_equal(new.model_state, state.model_state)
  assert not np.allclose(new.params["head"]["kernel"],
                         state.params["head"]["kernel"])


def test_mesh_is_exact_and_pmap_averages_the_statistics():
  assert jax.device_count() == 4
  model, state, tx = _classifier_state()
  step = supervised.make_step(model, tx)
  batch = _data(n=16)
  out = {}
  for mode in ("single", "mesh", "pmap"):
    c = parallel.compile_step(step, mode)
    s, _ = c(c.put_state(state), c.put_batch(batch), jax.random.key(0))
    out[mode] = c.get_state(s)
  # A mesh computes the global batch's statistics: the same state.
  chex.assert_trees_all_close(out["mesh"].model_state,
                              out["single"].model_state, atol=1e-5,
                              rtol=1e-5)
  chex.assert_trees_all_close(out["mesh"].params, out["single"].params,
                              atol=1e-5, rtol=1e-5)
  # pmap averages the devices' statistics: for the stem (whose input does
  # not depend on BatchNorm) the mean of equal shards' means is the mean.
  stem = lambda s: s.model_state["batch_stats"]["backbone"]["stem"]["bn"]  # noqa: E731
  np.testing.assert_allclose(stem(out["pmap"])["mean"],
                             stem(out["single"])["mean"], rtol=1e-4,
                             atol=1e-6)


def test_statistics_are_checkpointed_and_resume_is_exact(tmp_path):
  model, state, tx = _classifier_state(optax.adam(1e-3))
  data = _data(n=48)
  step = supervised.make_step(model, tx)

  def fit(wd, n):
    return trainer_lib.Trainer(step, parallel="single").fit(
        state, lambda s: data_lib.batches(data, 16, seed=1, start_step=s),
        num_steps=n, rng=jax.random.key(0), workdir=str(wd), log_every=2)[0]

  full = fit(tmp_path / "a", 6)
  fit(tmp_path / "b", 3)
  resumed = fit(tmp_path / "b", 6)
  chex.assert_trees_all_equal(resumed.model_state, full.model_state)
  chex.assert_trees_all_equal(resumed.params, full.params)
  checkpoint.save_params(str(tmp_path / "params"), full.params,
                         full.model_state)
  params, ms = checkpoint.load_variables(str(tmp_path / "params"))
  chex.assert_trees_all_equal(ms, jax.device_get(full.model_state))
  chex.assert_trees_all_equal(params, jax.device_get(full.params))


def test_adaptation_normalises_source_and_target_in_one_pass():
  """DANN/MMD/CORAL: one forward pass over the concatenated batch, so the
  statistics are those of both domains together (TLlib's protocol)."""
  model = models.Classifier(_resnet(), num_classes=4)
  disc = da.discriminator((8,))
  params, ms = models.init_variables(model, SHAPE, 0)
  params = da.add_discriminator(params, model, disc, SHAPE, 1, model_state=ms)
  tx = optax.sgd(0.1)
  src = _data(n=8)
  tgt = _data(n=8, seed=1)["x"] * 3.0 + 2.0
  batch = dict(src, x_target=tgt)
  for align in ("dann", "mmd", "coral"):
    step = jax.jit(da.make_step(model, tx, alignment_name=align,
                                discriminator=disc, total_steps=10))
    state = state_lib.create_train_state(params, tx, model_state=ms)
    new, m = step(state, batch, jax.random.key(0))
    mean = new.model_state["batch_stats"]["backbone"]["stem"]["bn"]["mean"]
    both = np.concatenate([src["x"], tgt])
    want = 0.1 * np.asarray(_stem_pre_bn(params, both)).mean((0, 1, 2))
    np.testing.assert_allclose(mean, want, rtol=1e-4, atol=1e-6,
                               err_msg=align)
    assert np.isfinite(m["loss"])


# --------------------------------------------- every family, a ResNet
def _trains(step, state, batches, steps=3):
  """Runs a few steps; the loss is finite, the statistics moved, the
  parameters moved."""
  jstep = jax.jit(step)
  s = state
  for i in range(steps):
    s, m = jstep(s, batches(i), jax.random.key(i))
    assert np.isfinite(m["loss"]), m
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b),
                                       s.model_state, state.model_state))
  assert any(moved), "the BatchNorm statistics did not change"
  assert any(jax.tree.leaves(jax.tree.map(
      lambda a, b: not np.allclose(a, b), s.params, state.params)))
  return s


def test_finetune_l2_sp_and_lwf_with_a_resnet():
  model, state, tx = _classifier_state()
  data = _data()
  batches = lambda i: data  # noqa: E731
  mask = finetune.losses.l2_sp_shared_mask(state.params)
  _trains(finetune.make_step(model, tx, loss="l2_sp", shared_mask=mask),
          state.replace(extra={"source_params": state.params}), batches)
  params = finetune.lwf_params(state.params, state.params)
  lwf_state = state_lib.create_train_state(
      params, tx, model_state=state.model_state,
      extra={"source_params": state.params,
             "source_model_state": state.model_state})
  _trains(finetune.make_step(model, tx, loss="lwf", source_model=model),
          lwf_state, batches)


def test_features_and_distillation_with_a_resnet():
  model, state, tx = _classifier_state()
  data = _data()
  feats = features_lib.extract_features(model, state.params, data["x"],
                                        model_state=state.model_state)
  assert feats.shape == (32, 4)
  student = models.Classifier(_resnet(width=2), 4)
  sp, sms = models.init_variables(student, SHAPE, 1)
  s = state_lib.create_train_state(
      sp, tx, model_state=sms, extra={"teacher_params": state.params,
                                      "teacher_model_state":
                                      state.model_state})
  _trains(distillation.make_step(student, tx, teacher=model), s,
          lambda i: data)


def test_multitask_with_a_resnet_trunk():
  model = multitask.MultiTaskModel(_resnet(), tasks=(("a", 4), ("b", 3)))
  params, ms = models.init_variables(model, SHAPE, 0)
  tx = optax.sgd(0.1)
  d = _data()
  batch = {"x": d["x"], "y_a": d["y"], "y_b": d["y"] % 3}
  _trains(multitask.make_step(model, tx, weights=(("a", 1.0), ("b", 0.5))),
          state_lib.create_train_state(params, tx, model_state=ms),
          lambda i: batch)


def test_metric_learning_with_a_resnet():
  model = metric_learning.EmbeddingNet(_resnet(), dim=8)
  params, ms = models.init_variables(model, SHAPE, 0)
  tx = optax.sgd(0.05)
  d = _data()
  _trains(metric_learning.make_step(model, tx, mining="hard"),
          state_lib.create_train_state(params, tx, model_state=ms),
          lambda i: d)


def test_zero_shot_with_a_resnet():
  # DAP's model: a classifier with one output per attribute.
  model = models.Classifier(_resnet(), num_classes=5)
  params, ms = models.init_variables(model, SHAPE, 0)
  tx = optax.sgd(0.1)
  attrs = np.random.default_rng(0).integers(0, 2, (4, 5)).astype(np.float32)
  _trains(zero_shot.make_step(model, tx, method="dap"),
          state_lib.create_train_state(
              params, tx, model_state=ms,
              extra={"class_attributes": jnp.asarray(attrs)}),
          lambda i: _data())


def test_self_taught_autoencoder_with_a_resnet_encoder():
  ae = self_taught.Autoencoder(_resnet(), output_shape=SHAPE,
                               decoder_features=(16,))
  params, ms = models.init_variables(ae, SHAPE, 0)
  tx = optax.adam(1e-3)
  _trains(self_taught.make_step(ae, tx, noise_std=0.1),
          state_lib.create_train_state(params, tx, model_state=ms),
          lambda i: {"x": _data()["x"]})


@pytest.mark.parametrize("learner", ["protonet", "maml", "hypernet"])
def test_meta_learners_with_a_resnet(learner):
  rng = np.random.default_rng(0)
  ds = data_lib.Dataset(rng.normal(size=(60,) + SHAPE).astype(np.float32),
                        np.repeat(np.arange(6), 10).astype(np.int32), 6,
                        "toy")
  sampler = episodes.EpisodeSampler(ds, n_way=3, k_shot=2, n_query=2)
  tx = optax.sgd(0.01)
  if learner == "protonet":
    model = _resnet()
    params, ms = models.init_variables(model, SHAPE, 0)
    step = protonet.make_step(model, tx, n_way=3)
  elif learner == "maml":
    model = models.Classifier(_resnet(), num_classes=3)
    params, ms = models.init_variables(model, SHAPE, 0)
    step = maml.make_step(model, tx, kind="classification", inner_lr=0.1,
                          inner_steps=1)
  else:
    model = hypernet.HyperNetLearner(_resnet(), n_way=3, hidden=8,
                                     embed_dim=8)
    ep = sampler.episode(0)
    params, ms = models.init_variables(model, ep["support_x"], 0,
                                       ep["support_y"], ep["query_x"])
    step = hypernet.make_step(model, tx)
  state = state_lib.create_train_state(params, tx, model_state=ms)
  jstep = jax.jit(step)
  s = state
  for i in range(2):
    s, m = jstep(s, sampler.batch(i, 2), jax.random.key(i))
    assert np.isfinite(m["loss"])
  if learner == "maml":
    # Transductive BatchNorm (Finn et al.): each task's own statistics, no
    # running ones kept.
    chex.assert_trees_all_equal(s.model_state, state.model_state)
  else:
    assert any(jax.tree.leaves(jax.tree.map(
        lambda a, b: not np.allclose(a, b), s.model_state,
        state.model_state)))
