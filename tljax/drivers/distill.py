"""Knowledge distillation, the experiment (``experiments/distill.py``):
trains the teacher (or loads ``init_from``), then the student with and
without the teacher over several seeds, and reports test accuracies. The
method is :mod:`tljax.methods.distillation`.
"""

from __future__ import annotations

import os
import time

import jax

from tljax import evaluation
from tljax import models
from tljax import optim
from tljax import params as params_lib
from tljax.drivers import common
from tljax.methods import distillation
from tljax.methods import supervised


def train_and_evaluate(config, workdir: str) -> dict:
  """Teacher, then the student with and without distillation.

  Writes ``results.json`` with ``teacher_accuracy``, ``student_accuracy``
  (labels only) and ``distilled_accuracy`` (mean over seeds, with ``_std``
  and ``_runs``) and the gain ``distillation_gain``.
  """
  t0 = time.time()
  common.validate(config)
  c = config
  if c.num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {c.num_seeds}")
  train = common.load(c, c.data).require_labels()
  test = common.load(c, c.data, "test").require_labels(train.num_classes)
  shape = train.example_shape
  teacher = models.build_classifier(c.teacher.model, train.num_classes, shape,
                                    train.modality)
  student = models.build_classifier(c.student, train.num_classes, shape,
                                    train.modality)
  teacher_params, teacher_state, _ = common.source_params(
      c.teacher, init_from=c.init_from, source=c.data, seed=c.seed,
      data_dir=c.data_dir, model_config=c.teacher.model, model=teacher,
      example_shape=shape, workdir=os.path.join(workdir, "teacher"))
  teacher_acc = evaluation.accuracy(teacher, teacher_params, test,
                                    model_state=teacher_state)
  student_params0 = models.init_params(student, shape, c.seed)
  tx = optim.from_config(student_params0, c.optim, total_steps=c.num_steps)
  trainers = {
      "student": common.trainer(supervised.make_step(student, tx), tx, c),
      "distilled": common.trainer(distillation.make_step(
          student, tx, teacher=teacher, temperature=c.temperature,
          alpha=c.alpha), tx, c)}
  budget = c.labels_per_class if c.labels_per_class > 0 else None

  def run(name, seed):
    subset = common.load(c, c.data, seed=seed, labels_per_class=budget)
    params, model_state = models.init_variables(
        student, shape, jax.random.key(1_000_003 + seed))
    state, _ = trainers[name].train_from(
        params, subset.arrays(), batch_size=c.batch_size,
        num_steps=c.num_steps, seed=seed, rng=jax.random.key(seed),
        extra={"teacher_params": teacher_params,
               "teacher_model_state": teacher_state},
        model_state=model_state)
    return common.accuracy(student, state, test)

  with common.sweep_cells(c, workdir) as cells:
    runs = {name: [cells.get_or_run({"run": name, "seed": c.seed + i},
                                    lambda: run(name, c.seed + i))  # noqa: B023
                   for i in range(c.num_seeds)] for name in trainers}
  metrics = {"teacher_accuracy": teacher_acc,
             "teacher_params": params_lib.count_params(teacher_params),
             "student_params": params_lib.count_params(student_params0)}
  for name, r in runs.items():
    s = common.summarize(r)
    metrics[f"{name}_accuracy"] = s["mean"]
    metrics[f"{name}_accuracy_std"] = s["std"]
    metrics[f"{name}_accuracy_runs"] = s["runs"]
  metrics["distillation_gain"] = (metrics["distilled_accuracy"]
                                  - metrics["student_accuracy"])
  return common.finish(
      workdir, metrics, c, t0,
      f"teacher {100 * teacher_acc:.1f}% ({metrics['teacher_params']} "
      f"params); student ({metrics['student_params']} params) "
      f"{100 * metrics['student_accuracy']:.1f} ± "
      f"{100 * metrics['student_accuracy_std']:.1f}% from labels, "
      f"{100 * metrics['distilled_accuracy']:.1f} ± "
      f"{100 * metrics['distilled_accuracy_std']:.1f}% distilled "
      f"(T={c.temperature}, alpha={c.alpha}, {c.num_seeds} seeds)")
