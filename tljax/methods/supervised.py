"""Supervised classification: the loss every transfer method starts from.

    step = make_step(model, tx)   # step(state, batch, rng, *, axis_name=None)

The train-on-one-domain / load-into-another experiment that uses it is
:mod:`tljax.drivers.train` (``experiments/train.py``); prediction and
accuracy are in :mod:`tljax.evaluation`.
"""

from __future__ import annotations

import flax.linen as nn
import optax

from tljax import losses
from tljax import models
from tljax.train import state as state_lib


def classification_loss(params, state, batch, rng, *, model: nn.Module,
                        freeze_bn: bool = False, axis_name=None):
  """Softmax cross-entropy on ``batch['x']``/``batch['y']`` (weighted by
  ``batch['w']`` if present); metrics: ``accuracy``.

  A model with BatchNorm normalises with the batch's statistics and updates
  the running ones (``state.model_state``), unless ``freeze_bn`` keeps it in
  inference mode (TLlib's ``freeze_bn`` for fine-tuning).
  """
  logits, model_state = models.apply_train(
      model, params, batch["x"], model_state=state_lib.model_state_of(state),
      train=not freeze_bn, rng=rng)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
  loss = losses.weighted_mean(ce, batch.get("w"), axis_name=axis_name)
  return loss, state_lib.loss_aux(
      {"accuracy": losses.accuracy(logits, batch["y"])}, model_state)


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              freeze_bn: bool = False):
  """The step of :func:`classification_loss` for ``model``."""
  return state_lib.loss_step(classification_loss, tx, model=model,
                             freeze_bn=freeze_bn)
