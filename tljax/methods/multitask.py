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

:func:`train_and_evaluate` runs ``experiments/multitask.py``: a source and
a target task trained jointly, against the target task alone.
"""

from __future__ import annotations

import functools
import time
from typing import Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from tljax import data as data_lib
from tljax import losses
from tljax import models
from tljax import optim
from tljax.methods import supervised
from tljax.train import loop
from tljax.train import state as state_lib
from tljax.train import lean


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
  del state, rng, axis_name
  known = {t for t, _ in model.tasks}
  unknown = [t for t, _ in weights if t not in known]
  if unknown:
    raise ValueError(f"weights name tasks {unknown} that the model does not "
                     f"have; it has {sorted(known)}")
  total, metrics = 0.0, {}
  for task, w in weights:
    x, y = _task_inputs(batch, task)
    logits = model.apply({"params": params}, x, task=task, train=True)
    ce = losses.cross_entropy(logits, y)
    metrics[f"loss_{task}"] = ce
    metrics[f"accuracy_{task}"] = losses.accuracy(logits, y)
    total = total + w * ce
  return total, metrics


def task_batches(task_arrays: dict[str, dict[str, np.ndarray]],
                 batch_size: int, num_steps: int, *, seed: int,
                 start_step: int = 0) -> dict[str, np.ndarray]:
  """Stacked batches (see :func:`tljax.train.lean.stack_batches`) of
  every task, keyed ``x_<task>``, ``y_<task>``; each task is shuffled on its
  own, so tasks of different sizes cycle at their own pace."""
  out = {}
  for i, (task, arrays) in enumerate(sorted(task_arrays.items())):
    stacked = lean.stack_batches(arrays, batch_size, num_steps,
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


def predict_task(model: MultiTaskModel, params, x: np.ndarray, task: str
                 ) -> np.ndarray:
  """Logits of one task's head over ``x`` (fixed-size batches, one
  compilation per task)."""
  return supervised.predict(model, params, x, method=_task_method(task))


def _eval(model, params, task, ds) -> float:
  return float(np.mean(predict_task(model, params, ds.x, task).argmax(-1)
                       == ds.y))


QUICK = dict(num_steps=6, batch_size=16, seeds=2, eval_examples=200)


def train_and_evaluate(config, workdir: str) -> dict:
  """Source and target tasks jointly vs the target task alone.

  Writes ``results.json`` with, per mode (``joint``, ``target_only``), the
  target test accuracy (mean, std, runs over seeds) and, for ``joint``, the
  source task's test accuracy too.
  """
  t0 = time.time()
  c = ml_collections.ConfigDict(config.to_dict())
  if c.quick:
    c.update(QUICK)
    c.model = ml_collections.ConfigDict({"name": "mlp", "features": (16,)})
  if c.seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {c.seeds}")
  kw = dict(data_dir=c.data_dir or None)
  source = data_lib.load(c.source, "train", seed=c.seed, **kw).require_labels()
  target_all = data_lib.load(c.target, "train", seed=c.seed,
                             **kw).require_labels()
  n_eval = c.eval_examples or None
  tests = {"source": data_lib.load(c.source, "test", seed=c.seed,
                                   num_examples=n_eval, **kw),
           "target": data_lib.load(c.target, "test", seed=c.seed,
                                   num_examples=n_eval, **kw)}
  if source.example_shape != target_all.example_shape:
    raise ValueError(f"source {c.source!r} examples have shape "
                     f"{source.example_shape}, target {c.target!r} "
                     f"{target_all.example_shape}; one trunk needs one input "
                     "shape.")
  model = MultiTaskModel(models.backbone_from_config(c.model,
                                                     source.example_shape),
                         tasks=(("source", source.num_classes),
                                ("target", target_all.num_classes)))
  modes = {"joint": (("source", c.source_weight), ("target", 1.0)),
           "target_only": (("target", 1.0),)}
  init = lean.compiled_init(model, source.example_shape)
  params0 = init(jax.random.key(0))
  tx = optim.make_optimizer(params0, learning_rate=c.learning_rate)
  trainers = {m: lean.LeanTrainer(functools.partial(
      state_lib.train_step, tx=tx, loss_fn=functools.partial(
          multitask_loss, model=model, weights=w))) for m, w in modes.items()}
  budget = c.labels_per_class if c.labels_per_class > 0 else None
  runs = {m: {"target": [], "source": []} for m in modes}
  for i in range(c.seeds):
    seed = c.seed + i
    target = data_lib.load(c.target, "train", seed=seed,
                           labels_per_class=budget, **kw)
    params = init(jax.random.key(1_000_003 + seed))
    for mode, trainer in trainers.items():
      tasks = {"target": target.arrays()}
      if mode == "joint":
        tasks["source"] = source.arrays()
      batches = task_batches(tasks, c.batch_size, c.num_steps, seed=seed)
      state, _ = trainer.run_stacked(
          state_lib.create_train_state(params, tx), batches,
          jax.random.key(seed))
      for task in ("target", "source") if mode == "joint" else ("target",):
        runs[mode][task].append(_eval(model, state.params, task, tests[task]))
  metrics = {}
  for mode, per_task in runs.items():
    for task, r in per_task.items():
      if r:
        metrics[f"{mode}/{task}_accuracy"] = lean.summarize(r)
  gain = (metrics["joint/target_accuracy"]["mean"]
          - metrics["target_only/target_accuracy"]["mean"])
  metrics["joint_gain_on_target"] = gain
  metrics["wall_seconds"] = time.time() - t0
  loop.write_results(workdir, metrics, c)
  j, t = metrics["joint/target_accuracy"], metrics["target_only/target_accuracy"]
  loop.say(f"target {c.target} ({budget or 'all'} labels/class): joint with "
           f"{c.source} {100 * j['mean']:.1f} ± {100 * j['std']:.1f}%, alone "
           f"{100 * t['mean']:.1f} ± {100 * t['std']:.1f}%; source task "
           f"{100 * metrics['joint/source_accuracy']['mean']:.1f}% "
           f"({c.seeds} seeds, {time.time() - t0:.0f}s)")
  return metrics
