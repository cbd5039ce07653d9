"""Multitask learning, the experiment (``experiments/multitask.py``): a
source and a target task trained jointly on one trunk, against the target
task alone, over several seeds. The method is
:mod:`tljax.methods.multitask`.
"""

from __future__ import annotations

import time

import jax

from tljax import models
from tljax import optim
from tljax.drivers import common
from tljax.methods import multitask


def train_and_evaluate(config, workdir: str) -> dict:
  """Source and target tasks jointly vs the target task alone.

  Writes ``results.json`` with, per mode (``joint``, ``target_only``), the
  target test accuracy (mean, std, runs over seeds) and, for ``joint``, the
  source task's test accuracy too.
  """
  t0 = time.time()
  common.validate(config)
  c = config
  if c.num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {c.num_seeds}")
  source = common.load(c, c.source).require_labels()
  target_all = common.load(c, c.target).require_labels()
  n_eval = c.eval_examples or None
  tests = {"source": common.load(c, c.source, "test", num_examples=n_eval),
           "target": common.load(c, c.target, "test", num_examples=n_eval)}
  common.check_same_shape(source, [("target", target_all)],
                          "one trunk needs one input shape.")
  model = multitask.MultiTaskModel(
      models.backbone_from_config(c.model, source.example_shape,
                                  source.modality),
      tasks=(("source", source.num_classes),
             ("target", target_all.num_classes)))
  modes = {"joint": (("source", c.source_weight), ("target", 1.0)),
           "target_only": (("target", 1.0),)}
  shape = source.example_shape
  params0 = models.init_params(model, shape, 0)
  tx = optim.from_config(params0, c.optim, total_steps=c.num_steps)
  trainers = {m: common.trainer(multitask.make_step(model, tx, weights=w),
                                tx, c) for m, w in modes.items()}
  budget = c.labels_per_class if c.labels_per_class > 0 else None

  def run(mode, seed):
    """Test accuracy of each task trained in ``mode`` with ``seed``."""
    target = common.load(c, c.target, seed=seed, labels_per_class=budget)
    params, model_state = models.init_variables(
        model, shape, jax.random.key(1_000_003 + seed))
    tasks = {"target": target.arrays()}
    if mode == "joint":
      tasks["source"] = source.arrays()
    batches = multitask.task_batches(tasks, c.batch_size, c.num_steps,
                                     seed=seed)
    trainer = trainers[mode]
    state, _ = trainer.run_stacked(
        trainer.init_state(params, model_state=model_state), batches,
        jax.random.key(seed))
    return {task: multitask.task_accuracy(
        model, state.params, task, tests[task].x, tests[task].y,
        model_state=state.model_state) for task in tasks}

  runs = {m: {"target": [], "source": []} for m in modes}
  with common.sweep_cells(c, workdir) as cells:
    for i in range(c.num_seeds):
      for mode in modes:
        acc = cells.get_or_run({"mode": mode, "seed": c.seed + i},
                               lambda: run(mode, c.seed + i))  # noqa: B023
        for task, a in acc.items():
          runs[mode][task].append(a)
  metrics = {}
  for mode, per_task in runs.items():
    for task, r in per_task.items():
      if r:
        metrics[f"{mode}/{task}_accuracy"] = common.summarize(r)
  j, t = metrics["joint/target_accuracy"], metrics[
      "target_only/target_accuracy"]
  metrics["joint_gain_on_target"] = j["mean"] - t["mean"]
  return common.finish(
      workdir, metrics, c, t0,
      f"target {c.target} ({budget or 'all'} labels/class): joint with "
      f"{c.source} {common.mean_std(j)}%, alone {common.mean_std(t)}%; "
      f"source task {100 * metrics['joint/source_accuracy']['mean']:.1f}% "
      f"({c.num_seeds} seeds, {time.time() - t0:.0f}s)")
