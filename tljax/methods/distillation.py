"""Knowledge distillation: a small student learns from a large teacher.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural
Network": the student minimises a weighted sum of the KL between the
teacher's and its own predictions at temperature ``T`` (scaled by ``T^2``,
:func:`tljax.losses.distillation_kl`) and the usual cross-entropy on the
labels. The teacher is fixed: its parameters ride in
``state.extra['teacher_params']`` and are never differentiated.

  step = make_step(student, tx, teacher=teacher, temperature=4.0, alpha=0.9)
  state = create_train_state(student_params, tx,
                             extra={'teacher_params': teacher_params})

The experiment (``experiments/distill.py``, :mod:`tljax.drivers.distill`)
trains the teacher, then the student with and without it over several seeds.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import optax

from tljax import losses
from tljax import models
from tljax.train import state as state_lib


def distillation_loss(params, state, batch, rng, *, student: nn.Module,
                      teacher: nn.Module, temperature: float = 4.0,
                      alpha: float = 0.9, axis_name=None):
  """``alpha * T^2 KL(teacher_T || student_T) + (1 - alpha) * CE(labels)``.

  Args:
    params: the student's parameters.
    state: holds ``extra['teacher_params']`` (and
      ``extra['teacher_model_state']`` for a teacher with BatchNorm).
    batch: ``x`` and ``y`` (``alpha=1`` needs no labels: ``y`` optional).
    rng, axis_name: unused (the step shape).
    student, teacher: the two models (their outputs must have the same
      number of classes).
    temperature: ``T`` of the soft targets.
    alpha: weight of the distillation term, in ``[0, 1]``.

  Returns:
    ``(loss, metrics)`` with ``kl``, ``ce`` (if labelled) and ``accuracy``.
  """
  del axis_name
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  teacher_logits = models.apply(
      teacher, state.extra["teacher_params"], batch["x"],
      model_state=state.extra.get("teacher_model_state"))
  logits, model_state = models.apply_train(
      student, params, batch["x"],
      model_state=state_lib.model_state_of(state), rng=rng)
  kl = jnp.mean(losses.distillation_kl(logits, teacher_logits,
                                       temperature=temperature))
  metrics = {"kl": kl}
  loss = alpha * kl
  if "y" in batch:
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["y"]))
    metrics.update(ce=ce, accuracy=losses.accuracy(logits, batch["y"]))
    loss = loss + (1.0 - alpha) * ce
  elif alpha < 1.0:
    raise ValueError("the batch has no labels 'y'; use alpha=1 to learn from "
                     "the teacher alone")
  return loss, state_lib.loss_aux(metrics, model_state)


def make_step(student: nn.Module, tx: optax.GradientTransformation, *,
              teacher: nn.Module, temperature: float = 4.0,
              alpha: float = 0.9):
  """The step of :func:`distillation_loss`; the train state must carry
  ``extra['teacher_params']``."""
  return state_lib.loss_step(distillation_loss, tx, student=student,
                             teacher=teacher, temperature=temperature,
                             alpha=alpha)
