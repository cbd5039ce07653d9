"""Multitask learning: one shared trunk, one head per task, weighted losses.

Caruana (1997), "Multitask Learning": tasks trained together share a
representation, so a task with few labels can borrow the features another
task's labels teach. Parameters are ``{'backbone': ..., 'head_<task>': ...}``;
each task's loss reaches its own head and the shared backbone only.

Each task may bring its own inputs (``batch['x_<task>']``, e.g. a source and
a target domain trained jointly) or share ``batch['x']`` (a main task with an
auxiliary one on the same examples); labels are ``batch['y_<task>']``.

  >>> import jax, jax.numpy as jnp
  >>> from tljax import models
  >>> model = MultiTaskModel(models.MLP((8,)), tasks=(('a', 3), ('b', 2)))
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4)))['params']
  >>> sorted(params)
  ['backbone', 'head_a', 'head_b']

The experiment (``experiments/multitask.py``, :mod:`tljax.drivers.multitask`)
trains a source and a target task jointly, against the target task alone.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax

from tljax import evaluation
from tljax import losses
from tljax import models
from tljax.train import state as state_lib
from tljax.train import trainer as trainer_lib


class MultiTaskModel(nn.Module):
  """A shared ``backbone`` and a linear head ``head_<task>`` per task.

  ``tasks`` is a tuple of ``(name, num_classes)`` pairs. Calling the model
  returns a dict of logits, one entry per task (every head on the same
  inputs); ``task=`` returns one task's logits only.
  """
  backbone: nn.Module
  tasks: Sequence[tuple[str, int]]

  @nn.compact
  def __call__(self, x, *, task: str | None = None, train: bool = False):
    names = [t for t, _ in self.tasks]
    if task is not None and task not in names:
      raise ValueError(f"unknown task {task!r}; the model has {names}")
    h = self.backbone(x, train=train)
    out = {}
    for name, n in self.tasks:
      head = nn.Dense(n, name=f"head_{name}")
      if task is None or task == name or self.is_initializing():
        out[name] = head(h)
    return out if task is None else out[task]


def _task_inputs(batch: dict, task: str):
  key = f"x_{task}" if f"x_{task}" in batch else "x"
  if key not in batch:
    raise ValueError(f"the batch has neither 'x_{task}' nor 'x' for task "
                     f"{task!r}; it has {sorted(batch)}")
  if f"y_{task}" not in batch:
    raise ValueError(f"the batch has no labels 'y_{task}' for task {task!r}; "
                     f"it has {sorted(batch)}")
  return batch[key], batch[f"y_{task}"]


def multitask_loss(params, state, batch, rng, *, model: MultiTaskModel,
                   weights: Sequence[tuple[str, float]], axis_name=None):
  """``sum_t w_t * CE_t``; metrics ``loss_<t>`` and ``accuracy_<t>``.

  Args:
    params: ``{'backbone', 'head_<task>', ...}``.
    state, rng, axis_name: unused (the step shape).
    batch: ``x_<task>`` (or a shared ``x``) and ``y_<task>`` per task.
    model: the :class:`MultiTaskModel`.
    weights: ``(task, weight)`` pairs; a task with weight 0 is still
      evaluated (its metrics are reported) but does not train anything.

  Returns:
    ``(loss, metrics)``.
  """
  del axis_name
  known = {t for t, _ in model.tasks}
  unknown = [t for t, _ in weights if t not in known]
  if unknown:
    raise ValueError(f"weights name tasks {unknown} that the model does not "
                     f"have; it has {sorted(known)}")
  total, metrics = 0.0, {}
  model_state = state_lib.model_state_of(state)
  for task, w in weights:
    x, y = _task_inputs(batch, task)
    # With BatchNorm, each task's pass updates the shared statistics.
    logits, model_state = models.apply_train(
        model, params, x, model_state=model_state, rng=rng, task=task)
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    metrics[f"loss_{task}"] = ce
    metrics[f"accuracy_{task}"] = losses.accuracy(logits, y)
    total = total + w * ce
  return total, state_lib.loss_aux(metrics, model_state)


def task_batches(task_arrays: dict[str, dict[str, np.ndarray]],
                 batch_size: int, num_steps: int, *, seed: int,
                 start_step: int = 0) -> dict[str, np.ndarray]:
  """Stacked batches (see :func:`tljax.train.stack_batches`) of
  every task, keyed ``x_<task>``, ``y_<task>``; each task is shuffled on its
  own, so tasks of different sizes cycle at their own pace."""
  out = {}
  for i, (task, arrays) in enumerate(sorted(task_arrays.items())):
    stacked = trainer_lib.stack_batches(arrays, batch_size, num_steps,
                                        seed=seed * 1000 + i,
                                        start_step=start_step)
    out.update({f"{k}_{task}": v for k, v in stacked.items()})
  return out


@functools.lru_cache(maxsize=None)
def _task_method(task: str):
  """A (cached, so hashable and stable) ``apply`` method for one task."""

  def logits(module, x):
    return module(x, task=task)

  return logits


def predict_task(model: MultiTaskModel, params, x: np.ndarray, task: str, *,
                 model_state=None) -> np.ndarray:
  """Logits of one task's head over ``x`` (fixed-size batches, one
  compilation per task)."""
  return evaluation.predict(model, params, x, model_state=model_state,
                            method=_task_method(task))


def task_accuracy(model: MultiTaskModel, params, task: str, x: np.ndarray,
                  y: np.ndarray, *, model_state=None) -> float:
  """Accuracy of one task's head on ``(x, y)``."""
  return float(np.mean(predict_task(model, params, x, task,
                                    model_state=model_state).argmax(-1) == y))


def make_step(model: MultiTaskModel, tx: optax.GradientTransformation, *,
              weights: Sequence[tuple[str, float]]):
  """The step of :func:`multitask_loss` with the task ``weights``."""
  return state_lib.loss_step(multitask_loss, tx, model=model,
                             weights=tuple(weights))
