"""Knowledge distillation: a small student learns from a large teacher.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural
Network": the student minimises a weighted sum of the KL between the
teacher's and its own predictions at temperature ``T`` (scaled by ``T^2``,
:func:`tljax.losses.distillation_kl`) and the usual cross-entropy on the
labels. The teacher is fixed: its parameters ride in
``state.extra['teacher_params']`` and are never differentiated.

  step = functools.partial(
      train_step, tx=tx, loss_fn=functools.partial(
          distillation_loss, student=student, teacher=teacher,
          temperature=4.0, alpha=0.9))
  state = create_train_state(student_params, tx,
                             extra={'teacher_params': teacher_params})

:func:`train_and_evaluate` runs ``experiments/distill.py``: trains the
teacher (or loads ``init_from``), then the student with and without the
teacher over several seeds, and reports test accuracies.
"""

from __future__ import annotations

import functools
import os
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from tljax import data as data_lib
from tljax import losses
from tljax import models
from tljax import optim
from tljax import params as params_lib
from tljax.methods import supervised
from tljax.train import checkpoint
from tljax.train import loop
from tljax.train import state as state_lib
from tljax.train import lean


def distillation_loss(params, state, batch, rng, *, student: nn.Module,
                      teacher: nn.Module, temperature: float = 4.0,
                      alpha: float = 0.9, axis_name=None):
  """``alpha * T^2 KL(teacher_T || student_T) + (1 - alpha) * CE(labels)``.

  Args:
    params: the student's parameters.
    state: holds ``extra['teacher_params']``.
    batch: ``x`` and ``y`` (``alpha=1`` needs no labels: ``y`` optional).
    rng, axis_name: unused (the step shape).
    student, teacher: the two models (their outputs must have the same
      number of classes).
    temperature: ``T`` of the soft targets.
    alpha: weight of the distillation term, in ``[0, 1]``.

  Returns:
    ``(loss, metrics)`` with ``kl``, ``ce`` (if labelled) and ``accuracy``.
  """
  del rng, axis_name
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  teacher_logits = teacher.apply({"params": state.extra["teacher_params"]},
                                 batch["x"])
  logits = student.apply({"params": params}, batch["x"], train=True)
  kl = losses.distillation_kl(logits, teacher_logits, temperature=temperature)
  metrics = {"kl": kl}
  loss = alpha * kl
  if "y" in batch:
    ce = losses.cross_entropy(logits, batch["y"])
    metrics.update(ce=ce, accuracy=losses.accuracy(logits, batch["y"]))
    loss = loss + (1.0 - alpha) * ce
  elif alpha < 1.0:
    raise ValueError("the batch has no labels 'y'; use alpha=1 to learn from "
                     "the teacher alone")
  return loss, metrics


def _teacher_config(config) -> ml_collections.ConfigDict:
  """The :mod:`tljax.methods.supervised` config of the teacher run."""
  c = ml_collections.ConfigDict(config.teacher.to_dict())
  c.source, c.target, c.data_dir = config.data, "", config.data_dir
  c.seed, c.train_on, c.labels_per_class = config.seed, "source", -1
  c.init_from, c.dont_load, c.parallel = "", (), "single"
  return c


QUICK_TEACHER = dict(num_steps=10, batch_size=16, eval_every=0, log_every=10,
                     checkpoint_every=0)


def train_and_evaluate(config, workdir: str) -> dict:
  """Teacher, then the student with and without distillation.

  Writes ``results.json`` with ``teacher_accuracy``, ``student_accuracy``
  (labels only) and ``distilled_accuracy`` (mean over seeds, with ``_std``
  and ``_runs``) and the gain ``distillation_gain``.
  """
  t0 = time.time()
  c = ml_collections.ConfigDict(config.to_dict())
  if c.quick:
    c.teacher.update(QUICK_TEACHER)
    c.teacher.optim.warmup_steps = 0
    c.teacher.model = ml_collections.ConfigDict({"name": "mlp",
                                                 "features": (32,)})
    c.student = ml_collections.ConfigDict({"name": "mlp", "features": (16,)})
    c.update(num_steps=6, batch_size=16, seeds=2)
  if c.seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {c.seeds}")
  load = functools.partial(data_lib.load, c.data, data_dir=c.data_dir or None)
  train = load("train", seed=c.seed).require_labels()
  test = load("test", seed=c.seed).require_labels(train.num_classes)
  teacher = supervised.build_model(c.teacher, train.num_classes,
                                   train.example_shape)
  student = models.build_classifier(c.student, train.num_classes)
  shape = train.example_shape
  if c.init_from:
    teacher_params = params_lib.merge_params(
        checkpoint.load_params(c.init_from),
        lean.compiled_init(teacher, shape)(jax.random.key(c.seed)))
  else:
    loop.say(f"training the teacher on {c.data}")
    supervised.train_and_evaluate(_teacher_config(c),
                                  os.path.join(workdir, "teacher"))
    teacher_params = checkpoint.load_params(os.path.join(workdir, "teacher"))
  teacher_acc = supervised.evaluate(teacher, teacher_params, test)["accuracy"]
  init_student = lean.compiled_init(student, shape)
  student_params0 = init_student(jax.random.key(c.seed))
  tx = optim.make_optimizer(student_params0, learning_rate=c.learning_rate)
  trainers = {}
  for name, loss_fn in (
      ("student", functools.partial(supervised.classification_loss,
                                    model=student)),
      ("distilled", functools.partial(distillation_loss, student=student,
                                      teacher=teacher,
                                      temperature=c.temperature,
                                      alpha=c.alpha))):
    trainers[name] = lean.LeanTrainer(functools.partial(
        state_lib.train_step, loss_fn=loss_fn, tx=tx))
  budget = c.labels_per_class if c.labels_per_class > 0 else None
  runs = {"student": [], "distilled": []}
  for i in range(c.seeds):
    seed = c.seed + i
    subset = load("train", seed=seed, labels_per_class=budget)
    params = init_student(jax.random.key(1_000_003 + seed))
    for name, trainer in trainers.items():
      state = state_lib.create_train_state(
          params, tx, extra={"teacher_params": teacher_params})
      state, _ = trainer(state, subset.arrays(), batch_size=c.batch_size,
                         num_steps=c.num_steps, seed=seed,
                         rng=jax.random.key(seed))
      runs[name].append(supervised.evaluate(student, state.params,
                                            test)["accuracy"])
  metrics = {"teacher_accuracy": teacher_acc,
             "teacher_params": params_lib.count_params(teacher_params),
             "student_params": params_lib.count_params(student_params0)}
  for name, r in runs.items():
    metrics[f"{name}_accuracy"] = float(np.mean(r))
    metrics[f"{name}_accuracy_std"] = float(np.std(r))
    metrics[f"{name}_accuracy_runs"] = [float(a) for a in r]
  metrics["distillation_gain"] = (metrics["distilled_accuracy"]
                                  - metrics["student_accuracy"])
  metrics["wall_seconds"] = time.time() - t0
  loop.write_results(workdir, metrics, c)
  loop.say(f"teacher {100 * teacher_acc:.1f}% ({metrics['teacher_params']} "
           f"params); student ({metrics['student_params']} params) "
           f"{100 * metrics['student_accuracy']:.1f} ± "
           f"{100 * metrics['student_accuracy_std']:.1f}% from labels, "
           f"{100 * metrics['distilled_accuracy']:.1f} ± "
           f"{100 * metrics['distilled_accuracy_std']:.1f}% distilled "
           f"(T={c.temperature}, alpha={c.alpha}, {c.seeds} seeds)")
  return metrics
