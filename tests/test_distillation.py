"""Distillation loss against numpy; a student learns from the teacher alone;
the quick experiment writes its results."""

from __future__ import annotations

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import models
from tljax import optim
from tljax.drivers import distill
from tljax.methods import distillation
from tljax.train import state as state_lib
from tljax.train import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import distill as distill_config  # noqa: E402

TEACHER = models.Classifier(models.MLP((16,)), num_classes=3)
STUDENT = models.Classifier(models.MLP((4,)), num_classes=3)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 5)).astype(np.float32)
Y = RNG.integers(0, 3, 12).astype(np.int32)


def _np_logits(params, x):
  layer = params["backbone"]["layer_0"]
  h = np.maximum(x @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"]),
                 0)
  return h @ np.asarray(params["head"]["kernel"]) + np.asarray(
      params["head"]["bias"])


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _setup():
  tp = TEACHER.init(jax.random.key(0), X[:1])["params"]
  sp = STUDENT.init(jax.random.key(1), X[:1])["params"]
  state = state_lib.create_train_state(sp, optim.make_optimizer(sp),
                                       extra={"teacher_params": tp})
  return tp, sp, state


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9),
                                               (2.0, 0.0)])
def test_loss_matches_numpy(temperature, alpha):
  tp, sp, state = _setup()
  loss, m = jax.jit(functools.partial(
      distillation.distillation_loss, student=STUDENT, teacher=TEACHER,
      temperature=temperature, alpha=alpha))(sp, state, {"x": X, "y": Y},
                                             None)
  zs, zt = _np_logits(sp, X), _np_logits(tp, X)
  log_p = _np_log_softmax(zt / temperature)
  log_q = _np_log_softmax(zs / temperature)
  kl = temperature ** 2 * np.mean(np.sum(np.exp(log_p) * (log_p - log_q), -1))
  ce = -np.mean(_np_log_softmax(zs)[np.arange(12), Y])
  np.testing.assert_allclose(m["kl"], kl, rtol=1e-4)
  np.testing.assert_allclose(m["ce"], ce, rtol=1e-5)
  np.testing.assert_allclose(loss, alpha * kl + (1 - alpha) * ce, rtol=1e-4)


def test_bad_inputs_raise():
  _, sp, state = _setup()
  fn = functools.partial(distillation.distillation_loss, student=STUDENT,
                         teacher=TEACHER)
  with pytest.raises(ValueError, match="no labels"):
    fn(sp, state, {"x": X}, None, alpha=0.5)
  with pytest.raises(ValueError, match="alpha"):
    fn(sp, state, {"x": X, "y": Y}, None, alpha=1.5)
  wrong = models.Classifier(models.MLP((4,)), num_classes=4)
  wp = wrong.init(jax.random.key(1), X[:1])["params"]
  with pytest.raises(ValueError, match="same number of classes"):
    distillation.distillation_loss(wp, state, {"x": X, "y": Y}, None,
                                   student=wrong, teacher=TEACHER)


def test_student_learns_the_teacher_without_labels():
  # A teacher that labels by a linear rule; the student sees no labels.
  x = np.random.default_rng(1).normal(size=(256, 5)).astype(np.float32)
  w = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
  teacher = models.Classifier(models.MLP(()), num_classes=3)
  tp = {"head": {"kernel": jnp.asarray(3 * w), "bias": jnp.zeros(3)}}
  rule = (x @ w).argmax(-1)
  sp = STUDENT.init(jax.random.key(3), x[:1])["params"]
  tx = optim.make_optimizer(sp, learning_rate=0.02)
  step = distillation.make_step(STUDENT, tx, teacher=teacher,
                                temperature=2.0, alpha=1.0)
  state, metrics = trainer_lib.Trainer(step, tx, scan=True).train_from(
      sp, {"x": x}, batch_size=64, num_steps=300, seed=0,
      rng=jax.random.key(0), extra={"teacher_params": tp})
  pred = STUDENT.apply({"params": state.params}, x).argmax(-1)
  assert np.mean(pred == rule) > 0.9, np.mean(pred == rule)
  assert metrics["kl"] < 0.2


def test_quick_experiment_writes_results(tmp_path):
  config = distill_config.get_config("quick")
  m = distill.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)["metrics"]
  for k in ("teacher_accuracy", "student_accuracy", "distilled_accuracy"):
    assert 0.0 <= saved[k] <= 1.0
  assert len(saved["distilled_accuracy_runs"]) == 2
  np.testing.assert_allclose(saved["distillation_gain"],
                             m["distilled_accuracy"] - m["student_accuracy"])
