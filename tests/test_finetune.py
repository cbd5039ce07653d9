"""Layer transfer, freezing, stages, L2-SP/LwF losses."""

from __future__ import annotations

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import losses
from tljax import models
from tljax import optim
from tljax import params as params_lib
from tljax.methods import finetune
from tljax.methods import supervised
from tljax.train import state as state_lib
from tljax.train import trainer as trainer_lib

MODEL = models.Classifier(models.MLP((8, 8, 8)), num_classes=3)
X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0.5).astype(np.int32)
ARRAYS = {"x": X, "y": Y}


def _init(seed):
  return MODEL.init(jax.random.key(seed), jnp.zeros((1, 4)))["params"]


def _flat(tree):
  return dict(zip(params_lib.leaf_names(tree), jax.tree.leaves(tree)))


CE = functools.partial(supervised.classification_loss, model=MODEL)


class LayerTransferTest(parameterized.TestCase):

  def test_patterns(self):
    self.assertEqual(finetune.layer_patterns(4, 2, "first"),
                     ("backbone/layer_0/.*", "backbone/layer_1/.*"))
    self.assertEqual(finetune.layer_patterns(4, 1, "last"),
                     ("backbone/layer_3/.*",))
    self.assertEqual(finetune.layer_patterns(4, 0, "last"), ())
    with self.assertRaisesRegex(ValueError, "k must be in"):
      finetune.layer_patterns(3, 4)
    with self.assertRaisesRegex(ValueError, "first' or 'last"):
      finetune.layer_patterns(3, 1, "middle")

  @parameterized.named_parameters(
      ("first_2", "first", 2, {"layer_0", "layer_1"}),
      ("last_2", "last", 2, {"layer_1", "layer_2"}),
      ("last_1", "last", 1, {"layer_2"}))
  def test_copies_exactly_the_named_layers(self, which, k, copied):
    source, fresh = _init(0), _init(1)
    params = finetune.transfer_layers(
        source, fresh, finetune.layer_patterns(3, k, which))
    src, new, out = _flat(source), _flat(fresh), _flat(params)
    for name, leaf in out.items():
      layer = name.split("/")[1] if name.startswith("backbone/") else None
      want = src[name] if layer in copied else new[name]
      np.testing.assert_array_equal(leaf, want, err_msg=name)
    # Sanity: the two initialisations differ everywhere.
    assert all(not np.array_equal(src[n], new[n]) for n in src
               if "kernel" in n)

  def test_errors(self):
    source, fresh = _init(0), _init(1)
    with self.assertRaisesRegex(ValueError, "matches no parameter"):
      finetune.transfer_layers(source, fresh, ["backbone/layer_9/.*"])
    wide = models.Classifier(models.MLP((8, 16, 8)), num_classes=3).init(
        jax.random.key(0), jnp.zeros((1, 4)))["params"]
    with self.assertRaisesRegex(ValueError, "shape mismatch.*layer_1"):
      finetune.transfer_layers(wide, fresh, ["backbone/.*"])
    # Layers outside the patterns may differ freely.
    finetune.transfer_layers(wide, fresh, ["backbone/layer_0/.*"])

  @parameterized.named_parameters(("first_2", "first", 2),
                                  ("last_2", "last", 2))
  def test_frozen_layers_are_bit_identical_after_training(self, which, k):
    source, fresh = _init(0), _init(1)
    keep = finetune.layer_patterns(3, k, which)
    params = finetune.transfer_layers(source, fresh, keep)
    tx = optim.make_optimizer(params, learning_rate=0.05,
                              lr_rules=finetune.freeze_rules(keep))
    trainer = trainer_lib.Trainer(finetune.make_step(MODEL, tx), tx)
    state, _ = trainer.train_from(params, ARRAYS, batch_size=8, num_steps=30,
                                  seed=0, rng=jax.random.key(0))
    before, after = _flat(params), _flat(state.params)
    frozen = jax.tree.leaves(optim.frozen_mask(params,
                                               finetune.freeze_rules(keep)))
    for (name, b), f in zip(before.items(), frozen):
      if f:
        assert np.array_equal(after[name], b), name
      else:
        assert not np.array_equal(after[name], b), name
    assert sum(frozen) == 2 * k


class RatesAndStagesTest(parameterized.TestCase):

  def test_discriminative_rates(self):
    rules = finetune.discriminative_lr_rules(3, decay=0.5)
    self.assertEqual(rules, [("backbone/layer_0/.*", 0.125),
                             ("backbone/layer_1/.*", 0.25),
                             ("backbone/layer_2/.*", 0.5), (".*", 1.0)])
    with self.assertRaisesRegex(ValueError, "decay"):
      finetune.discriminative_lr_rules(3, decay=0.0)

  def test_gradual_unfreezing_stages(self):
    stages = finetune.gradual_unfreezing_stages(2, 10)
    self.assertEqual([s for s, _ in stages], [3, 3, 4])
    self.assertEqual(stages[0][1], [("backbone/layer_0/.*", None),
                                    ("backbone/layer_1/.*", None),
                                    (".*", 1.0)])
    self.assertEqual(stages[1][1], [("backbone/layer_0/.*", None),
                                    ("backbone/layer_1/.*", 1.0),
                                    (".*", 1.0)])
    self.assertEqual(stages[2][1], [("backbone/layer_0/.*", 1.0),
                                    ("backbone/layer_1/.*", 1.0),
                                    (".*", 1.0)])
    with self.assertRaisesRegex(ValueError, "at least 3 steps"):
      finetune.gradual_unfreezing_stages(2, 2)

  @parameterized.named_parameters(("two_stages", 2), ("all_stages", 4))
  def test_train_in_stages_unfreezes_from_the_top(self, num_stages):
    params = _init(0)
    stages = finetune.gradual_unfreezing_stages(3, 40)[:num_stages]
    out, metrics = finetune.train_in_stages(
        params, stages,
        make_step=lambda tx: finetune.make_step(MODEL, tx),
        make_tx=lambda p, r: optim.make_optimizer(p, learning_rate=0.05,
                                                  lr_rules=r),
        arrays=ARRAYS, batch_size=8, seed=0, rng=jax.random.key(0))
    assert np.isfinite(metrics["loss"])
    before, after = _flat(params), _flat(out.params)
    unfrozen_layers = {f"layer_{3 - j}" for j in range(1, num_stages)}
    for name in before:
      layer = name.split("/")[1] if name.startswith("backbone/") else "head"
      changed = not np.array_equal(before[name], after[name])
      assert changed == (layer == "head" or layer in unfrozen_layers), name


class ConservativeLossTest(parameterized.TestCase):

  def test_l2_sp_loss_gradient_adds_the_pull_to_the_source(self):
    source = _init(0)
    params = jax.tree.map(lambda x: x + 0.1, source)
    mask = losses.l2_sp_shared_mask(params)
    state = state_lib.create_train_state(
        params, optim.make_optimizer(params), extra={"source_params": source})
    batch = {"x": X[:8], "y": Y[:8]}
    fn = functools.partial(finetune.l2_sp_loss, model=MODEL,
                           shared_mask=mask, alpha=0.3, beta=0.7)
    g_sp = jax.jit(jax.grad(lambda p: fn(p, state, batch, None)[0]))(params)
    g_ce = jax.jit(jax.grad(lambda p: CE(p, state, batch, None)[0]))(params)
    # Backbone: + alpha * (w - w0) = 0.03; head: + beta * w.
    want = {"backbone": jax.tree.map(lambda g: g + 0.3 * 0.1,
                                     g_ce["backbone"]),
            "head": jax.tree.map(lambda g, w: g + 0.7 * w, g_ce["head"],
                                 params["head"])}
    chex.assert_trees_all_close(g_sp, want, rtol=1e-5, atol=1e-6)
    loss, m = jax.jit(lambda p: fn(p, state, batch, None))(params)
    head_sq = sum(float(np.sum(np.square(v)))
                  for v in jax.tree.leaves(params["head"]))
    np.testing.assert_allclose(m["l2_sp"],
                               0.15 * 0.01 * 1.0 * sum(
                                   np.size(v) for v in
                                   jax.tree.leaves(params["backbone"]))
                               + 0.35 * head_sq, rtol=1e-4)
    np.testing.assert_allclose(loss, m["ce"] + m["l2_sp"], rtol=1e-6)

  def test_lwf_loss_at_the_start_is_the_source_entropy(self):
    source = _init(0)
    params = finetune.lwf_params(finetune.transfer_layers(
        source, _init(1), ["backbone/.*"]), source)
    state = state_lib.create_train_state(
        params, optim.make_optimizer(params), extra={"source_params": source})
    batch = {"x": X[:8], "y": Y[:8]}
    fn = functools.partial(finetune.lwf_loss, model=MODEL,
                           source_model=MODEL, weight=1.0, temperature=2.0)
    loss, m = fn(params, state, batch, None)
    # The trunk and old head are the source's, so the old-task outputs equal
    # the recorded ones: the LwF cross-entropy is the entropy of softmax(z/T).
    z = np.asarray(MODEL.apply({"params": source}, X[:8])) / 2.0
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(m["lwf"], -np.mean(np.sum(p * np.log(p), -1)),
                               rtol=1e-5)
    np.testing.assert_allclose(loss, m["ce"] + m["lwf"], rtol=1e-6)
    g = jax.jit(jax.grad(lambda q: fn(q, state, batch, None)[0]))(params)
    # At the start the penalty is at its minimum for the old head.
    chex.assert_trees_all_close(
        g["source_head"], jax.tree.map(np.zeros_like, params["source_head"]),
        atol=1e-6)
    assert "source_head" not in finetune.target_params(params)
    with pytest.raises(ValueError, match="already"):
      finetune.lwf_params(params, source)


def test_make_step_binds_each_loss():
  params = _init(0)
  tx = optim.make_optimizer(params)
  state = state_lib.create_train_state(params, tx,
                                       extra={"source_params": params})
  batch = {"x": X[:8], "y": Y[:8]}
  _, m = finetune.make_step(MODEL, tx)(state, batch, jax.random.key(0))
  assert "accuracy" in m
  mask = losses.l2_sp_shared_mask(params)
  _, m = finetune.make_step(MODEL, tx, loss="l2_sp", shared_mask=mask)(
      state, batch, jax.random.key(0))
  np.testing.assert_allclose(m["l2_sp"], 0.5 * 0.01 * sum(
      float(np.sum(np.square(v))) for v in jax.tree.leaves(params["head"])),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="unknown fine-tuning loss"):
    finetune.make_step(MODEL, tx, loss="lora")
