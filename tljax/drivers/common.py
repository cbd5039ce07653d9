"""What the experiment drivers share: data by config, the trainer from a
config, sweep summaries and tables, the source-model run, cached features on
disk, results lines.

Drivers are the only layer that prints, plots or writes files, and every
write goes through :mod:`tljax.workdir` (process 0 alone).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import time
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from tljax import data as data_lib
from tljax import evaluation
from tljax import models
from tljax import params as params_lib
from tljax import workdir as workdir_lib
from tljax.methods import features as features_lib
from tljax.train import preemption
from tljax.train import trainer as trainer_lib

PyTree = Any


# Config fields that cannot change a run's result: a workdir may be resumed
# with other values of these (tljax.workdir.claim).
HARMLESS_FIELDS = ("log_every", "eval_every", "checkpoint_every", "plot",
                   "parallel", "data_dir", "steps_per_call")
# Config fields added after workdirs existed, with the value runs made
# before them had: such a workdir resumes with that value and no other.
ADDED_FIELDS = {"maml.head_init": "learned", "init_from": ""}


def validate(config) -> None:
  """Checks the settings every experiment shares before any work starts:
  step counts, batch sizes and learning rates must be positive, seed counts
  at least 1. Raises one ValueError naming the field and what to do."""
  def walk(cfg, prefix=""):
    for k, v in cfg.items():
      name = f"{prefix}{k}"
      if hasattr(v, "items"):
        walk(v, name + ".")
        continue
      if isinstance(v, bool) or not isinstance(v, (int, float)):
        continue
      counts = (k.endswith("batch_size") or k.endswith("_steps")
                and k != "warmup_steps" and "inner" not in k)
      if counts and v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v}; it "
                         "counts steps or examples.")
      if k == "learning_rate" and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}.")
      if k == "num_seeds" and v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}.")
  walk(config)


# ------------------------------------------------------------------- data
def load(config, spec: str, split: str = "train", **kw) -> data_lib.Dataset:
  """:func:`tljax.data.load` with the config's ``seed`` and ``data_dir``
  (``seed`` in ``kw`` overrides it)."""
  kw.setdefault("seed", config.seed)
  return data_lib.load(spec, split, data_dir=config.get("data_dir") or None,
                       **kw)


def check_same_shape(reference: data_lib.Dataset, others, what: str):
  """Raises one clear error if a data set's examples differ in shape from
  ``reference``'s; ``others`` is ``[(name, dataset), ...]``."""
  for name, ds in others:
    if ds.example_shape != reference.example_shape:
      raise ValueError(
          f"{name} data {ds.name!r} has examples of shape {ds.example_shape}"
          f" but {reference.name!r} has {reference.example_shape}; {what}")


# -------------------------------------------------------------- training
def trainer(step: Callable, tx: optax.GradientTransformation | None, config,
            *, scan: bool = False) -> trainer_lib.Trainer:
  """A :class:`tljax.train.Trainer` in the config's ``parallel`` mode, with
  its ``steps_per_call`` (default 1) for full runs."""
  k = config.get("steps_per_call", 1)
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"steps_per_call must be an integer >= 1, got {k!r}")
  return trainer_lib.Trainer(step, tx, parallel=config.get("parallel", "auto"),
                             scan=scan, steps_per_call=k)


def fit(trainer_: trainer_lib.Trainer, state, batches_from:
        Callable[[int], Iterator], config, *, workdir: str | None,
        eval_fn: Callable[[PyTree], dict] | None = None,
        name: str = "train", num_steps: int | None = None,
        seed: int | None = None):
  """:meth:`Trainer.fit` with the loop settings every experiment config
  has: ``num_steps`` and ``seed`` (the rng; both unless given),
  ``eval_every``, ``log_every`` and ``checkpoint_every``. The workdir
  records the config that trains in it, and refuses another one
  (:func:`tljax.workdir.claim`)."""
  workdir_lib.claim(workdir, config, ignore=HARMLESS_FIELDS,
                    added=ADDED_FIELDS)
  return trainer_.fit(
      state, batches_from,
      num_steps=config.num_steps if num_steps is None else num_steps,
      rng=jax.random.key(config.seed if seed is None else seed),
      workdir=workdir, eval_fn=eval_fn,
      eval_every=config.get("eval_every", 0),
      log_every=config.get("log_every", 100),
      checkpoint_every=config.get("checkpoint_every", 0), name=name)


def accuracy(model: nn.Module, state, dataset: data_lib.Dataset) -> float:
  """Accuracy of ``model`` with a train state's parameters and model state
  (BatchNorm statistics) on a labelled data set."""
  return evaluation.accuracy(model, state.params, dataset,
                             model_state=state.model_state)


def batches_from(config, arrays: dict, *, seed: int | None = None,
                 batch_size: int | None = None
                 ) -> Callable[[int], Iterator[dict]]:
  """``start_step -> iterator`` of this process's batches of ``arrays``
  (:func:`tljax.data.batches` with the config's ``batch_size`` and
  ``seed`` unless given), for :func:`fit`. Says so in one line when the
  batch is larger than the data: every batch then repeats examples, and a
  step costs as much as several epochs."""
  bs = config.batch_size if batch_size is None else batch_size
  seed = config.seed if seed is None else seed
  n = data_lib.num_examples(arrays)
  if bs > n:
    workdir_lib.say(f"note: batch_size {bs} is larger than the {n} training "
                    f"examples, so every batch repeats each example about "
                    f"{bs / n:.0f} times; a smaller batch_size trains as well "
                    "for less.")
  return lambda start: data_lib.batches(arrays, bs, seed=seed,
                                        start_step=start)


def read_variables(path: str, like: PyTree | None = None
                   ) -> tuple[PyTree, dict]:
  """``(params, model_state)`` at ``path``: a tljax workdir or params
  directory (:func:`tljax.train.checkpoint.load_variables`), or a pretrained
  weights file, a torchvision / timm ``.safetensors`` state dict or a
  big_vision ``.npz`` (:func:`tljax.models.convert.load_variables`, which
  reads the target model's parameters ``like``, if given, for a ViT's heads,
  the architecture check and the position embedding's grid)."""
  from tljax.models import convert  # pylint: disable=g-import-not-at-top
  if convert.is_weights_file(path):
    return convert.load_variables(path, like=like)
  from tljax.train import checkpoint  # pylint: disable=g-import-not-at-top
  return checkpoint.load_variables(path)


def load_into(path: str, init: PyTree, dont_load: Sequence[str] = (), *,
              model_state: PyTree | None = None) -> tuple[PyTree, dict]:
  """``(params, model_state)`` saved at ``path`` (a workdir or params
  directory, or a pretrained ``.safetensors`` / ``.npz`` file: see
  :mod:`tljax.models.convert`), merged into ``init`` and the initial
  ``model_state`` with
  :func:`tljax.params.merge_params` (names and shapes checked,
  ``dont_load`` kept from the initial values). A saved model without state
  (or a model without state) keeps the initial model state."""
  dont_load = tuple(dont_load)
  loaded, loaded_state = read_variables(path, like=init)
  params = params_lib.merge_params(loaded, init, dont_load=dont_load)
  model_state = dict(model_state or {})
  if model_state and loaded_state:
    # The head has no statistics: only patterns that name some stay.
    names = params_lib.leaf_names(model_state)
    model_state = params_lib.merge_params(
        loaded_state, model_state, dont_load=tuple(
            f"[^/]+/{p}" for p in dont_load
            if any(re.fullmatch(f"[^/]+/{p}", n) for n in names)))
  return params, model_state


def source_run_config(run, *, source: str, seed: int, data_dir: str,
                      model) -> ml_collections.ConfigDict:
  """The :mod:`tljax.drivers.train` config of a source (or teacher) model:
  the loop and optimizer settings of ``run`` (a sub-config), trained on all
  of ``source`` on one device."""
  c = ml_collections.ConfigDict(run.to_dict())
  c.source, c.target, c.data_dir, c.seed = source, "", data_dir, seed
  c.model = ml_collections.ConfigDict(model.to_dict())
  c.train_on, c.labels_per_class = "source", -1
  c.init_from, c.dont_load = "", ()
  c.parallel = "single"
  return c


def source_params(run, *, init_from: str, source: str, seed: int,
                  data_dir: str, model_config, model: nn.Module,
                  example_shape, workdir: str) -> tuple[PyTree, dict, dict]:
  """The parameters of a source model: loaded from ``init_from`` (checked
  against ``model``), or trained on ``source`` with ``run``'s settings in
  ``workdir`` (resumable). Returns ``(params, model_state, the source
  run's metrics)``."""
  if init_from:
    init, init_state = models.init_variables(model, example_shape, seed)
    params, model_state = load_into(init_from, init, model_state=init_state)
    workdir_lib.say(f"source model loaded from {init_from}")
    return params, model_state, {}
  # Imported here: train is a driver too, and imports this module.
  from tljax.drivers import train as train_driver  # pylint: disable=g-import-not-at-top
  from tljax.train import checkpoint  # pylint: disable=g-import-not-at-top
  workdir_lib.say(f"training the source model on {source} "
                  f"({run.num_steps} steps) in {workdir}")
  metrics = train_driver.train_and_evaluate(
      source_run_config(run, source=source, seed=seed, data_dir=data_dir,
                        model=model_config), workdir)
  return (*checkpoint.load_variables(workdir), metrics)


# ------------------------------------------------------------ features
def _fingerprint(params: PyTree, x: np.ndarray) -> str:
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(params):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  h.update(np.ascontiguousarray(x).tobytes())
  h.update(str(x.shape).encode())
  return h.hexdigest()[:16]


def feature_cache(model: nn.Module, params: PyTree, x: np.ndarray, *,
                  workdir: str | None, name: str = "features",
                  model_state: PyTree | None = None
                  ) -> features_lib.FeatureCache:
  """:class:`tljax.methods.features.FeatureCache` of ``x``, kept on disk.

  With ``workdir`` the features are written to
  ``<workdir>/features/<name>-<fingerprint>.npz`` (the fingerprint hashes
  the parameters and the examples, so a changed backbone or data set never
  reads stale features) and read back by later calls.
  """
  x = np.asarray(x, np.float32)
  build = lambda: features_lib.FeatureCache.build(  # noqa: E731
      model, params, x, model_state=model_state)
  if not workdir:
    return build()
  path = os.path.join(workdir, "features",
                      f"{name}-{_fingerprint((params, model_state), x)}.npz")
  if os.path.exists(path):
    with np.load(path) as f:
      return features_lib.FeatureCache(x, f["features"])
  cache = build()
  workdir_lib.save_npz(path, features=cache.features)
  return cache


# -------------------------------------------------------------- sweeps
class Cells:
  """The finished cells of a sweep, stored as they complete.

  With a workdir, each cell's result is appended to
  ``<workdir>/cells.jsonl`` the moment it is known, so a sweep started again
  after a kill (or stopped by SIGTERM / Ctrl-C, see
  :mod:`tljax.train.preemption`) resumes at the first unfinished cell.

    cells = Cells(workdir)
    acc = cells.get_or_run({"strategy": "finetune", "budget": "5",
                            "seed": 0}, lambda: train_and_measure())
  """

  def __init__(self, workdir: str | None):
    self.path = os.path.join(workdir, "cells.jsonl") if workdir else None
    self._done = {self._key(r["cell"]): r["value"]
                  for r in workdir_lib.read_jsonl(self.path)} \
        if self.path else {}
    if self._done:
      workdir_lib.say(f"resuming a sweep: {len(self._done)} finished cells "
                      f"in {self.path}")

  @staticmethod
  def _key(cell: dict) -> str:
    return json.dumps(workdir_lib.to_json(cell), sort_keys=True)

  def get_or_run(self, cell: dict, fn: Callable[[], Any]):
    """The stored result of ``cell``, or ``fn()``, stored; then stops the
    sweep here if SIGTERM or Ctrl-C came."""
    key = self._key(cell)
    if key not in self._done:
      with preemption.watch() as stop:
        value = workdir_lib.to_json(fn())
        self._done[key] = value
        if self.path:
          workdir_lib.append_jsonl(self.path, {"cell": cell, "value": value})
        stop.raise_if_requested(None, self.path)
    return self._done[key]


@contextlib.contextmanager
def sweep_cells(config, workdir: str | None) -> Iterator[Cells]:
  """The :class:`Cells` of a sweep in ``workdir``, which the sweep holds
  (:func:`tljax.workdir.hold`) and whose recorded config must be this one
  (:func:`tljax.workdir.claim`)."""
  workdir_lib.claim(workdir, config, ignore=HARMLESS_FIELDS,
                    added=ADDED_FIELDS)
  with workdir_lib.hold(workdir):
    yield Cells(workdir)


class Trainers:
  """The compiled trainers of a sweep, one per name, each built on first
  use and reused for every budget and seed (its runs differ only in their
  inputs, so nothing recompiles)."""

  def __init__(self, config, *, batch_size: int, num_steps: int):
    self.config, self.batch_size, self.num_steps = config, batch_size, num_steps
    self._trainers: dict[str, trainer_lib.Trainer] = {}

  def train(self, name: str, build: Callable[[], tuple], params: PyTree,
            arrays: dict, seed: int, *, extra: PyTree | None = None,
            model_state: PyTree | None = None, scan: bool = False):
    """The train state of ``params`` (and ``model_state``) trained from a
    fresh state for ``num_steps`` steps on batches of ``arrays`` drawn with
    ``seed``; ``build() -> (step, tx)`` makes the trainer ``name`` the
    first time."""
    if name not in self._trainers:
      step, tx = build()
      self._trainers[name] = trainer(step, tx, self.config, scan=scan)
    state, _ = self._trainers[name].train_from(
        params, arrays, batch_size=self.batch_size, num_steps=self.num_steps,
        seed=seed, rng=jax.random.key(seed), extra=extra,
        model_state=model_state)
    return state


def run_sweep(config, spec: str, strategies: Sequence[str],
              budgets: Sequence[int], seeds: Sequence[int],
              run: Callable[[str, data_lib.Dataset, int], Any], *,
              num_classes: int | None = None,
              workdir: str | None = None) -> tuple[dict, dict, dict]:
  """Every strategy at every label budget and seed on the target ``spec``.

  For each budget (labels per class, 0 = all) and seed, the labelled subset
  is drawn once (:func:`load` with that seed) and every strategy trains on
  the same one: ``run(strategy, subset, seed)`` returns the test accuracy,
  or a dict with ``accuracy`` and other JSON values to keep. With a
  workdir, finished cells are stored as they complete (:class:`Cells`) and
  a restarted sweep resumes at the first unfinished one.

  Returns:
    ``(results, seconds, cells)``: ``results[strategy][budget_name]`` is the
    :func:`summarize` cell over seeds; ``seconds[strategy]`` the time spent
    on it in this process; ``cells[(strategy, budget_name, seed)]`` what
    ``run`` returned.
  """
  with sweep_cells(config, workdir) as store:
    results = {n: {} for n in strategies}
    seconds = {n: 0.0 for n in strategies}
    cells = {}
    for b in budgets:
      key = budget_name(b)
      subsets = [load(config, spec, seed=s, labels_per_class=b if b > 0
                      else None).require_labels(num_classes) for s in seeds]
      for name in strategies:
        t = time.time()
        for ds, s in zip(subsets, seeds):
          cells[(name, key, s)] = store.get_or_run(
              {"strategy": name, "budget": key, "seed": s},
              functools.partial(run, name, ds, s))
        accs = [c["accuracy"] if isinstance(c, dict) else c
                for c in (cells[(name, key, s)] for s in seeds)]
        seconds[name] += time.time() - t
        results[name][key] = cell = summarize(accs)
        workdir_lib.say(f"  labels/class {key:>4}  {name:<22} "
                        f"{mean_std(cell):>12}  ({time.time() - t:.1f}s)")
  return results, seconds, cells


def run_seeds(config) -> list[int]:
  """The seeds of a sweep's ``num_seeds`` runs, apart from ``config.seed``
  (which seeds the source model): ``seed + 1000 k`` for ``k = 1..``."""
  return [config.seed + 1000 * (k + 1) for k in range(config.num_seeds)]


def budgets_table(results: dict, strategies: Sequence[str],
                  budgets: Sequence[int], *, best: dict | None = None,
                  suffix: str = " labels/class") -> str:
  """:func:`sweep_table` with one column per label budget."""
  names = [budget_name(b) for b in budgets]
  return sweep_table(results, strategies, names,
                     header=[f"{k}{suffix}" for k in names], best=best)


def summarize(values) -> dict[str, Any]:
  """``{"mean", "std", "runs"}`` of one cell of a sweep (over seeds)."""
  return {"mean": float(np.mean(values)), "std": float(np.std(values)),
          "runs": [float(v) for v in values]}


def check_sweep(strategies, allowed, budgets, *, num_seeds: int
                ) -> tuple[list[str], list[int]]:
  """Validates a sweep's strategy names, label budgets (labels per class;
  0 means all, where the sweep allows it) and number of seeds.

  Returns the strategies and budgets as lists; raises one ValueError naming
  what is wrong.
  """
  strategies = list(strategies)
  bad = [s for s in strategies if s not in allowed]
  if bad or not strategies:
    raise ValueError(f"unknown strategies {bad or '(none given)'}; choose "
                     f"from {list(allowed)}")
  budgets = [int(b) for b in budgets]
  if not budgets or min(budgets) < 0:
    raise ValueError(f"budgets (labels per class; 0 = all) must be a "
                     f"non-empty list of integers >= 0, got {budgets}")
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
  return strategies, budgets


def budget_name(budget: int) -> str:
  """``"all"`` for budget 0 (all labels), else the number."""
  return "all" if budget <= 0 else str(budget)


def mean_std(cell: dict, scale: float = 100.0, digits: int = 1) -> str:
  """``"mean ± std"`` of a :func:`summarize` cell (as % by default)."""
  return (f"{scale * cell['mean']:.{digits}f} ± "
          f"{scale * cell['std']:.{digits}f}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]
                   ) -> str:
  """A markdown table from a header row and rows of cell strings."""
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def sweep_table(results: dict, strategies: Sequence[str],
                columns: Sequence[str], *, header: Sequence[str],
                best: dict | None = None) -> str:
  """Markdown table of ``results[strategy][column]`` cells as mean ± std %,
  the best strategy of each column (``best[column]``) in bold."""
  rows = []
  for name in strategies:
    cells = []
    for col in columns:
      cell = mean_std(results[name][col])
      cells.append(f"**{cell}**" if best and best.get(col) == name else cell)
    rows.append([name] + cells)
  return markdown_table(["strategy"] + list(header), rows)


def finish(workdir: str, metrics: dict, config, t0: float,
           message: str | None = None, **extra) -> dict:
  """Ends a run: ``wall_seconds`` since ``t0``, ``results.json`` (with
  ``extra`` fields), and one line (``message``, or :func:`result_line`)."""
  metrics["wall_seconds"] = time.time() - t0
  workdir_lib.write_results(workdir, metrics, config, **extra)
  workdir_lib.say(result_line(metrics) if message is None else message)
  return metrics


def result_line(metrics: dict, prefix: str = "results") -> str:
  """One line of the scalar metrics, for the end of a run."""
  return f"{prefix}: " + "  ".join(
      f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
      for k, v in metrics.items() if not isinstance(v, (dict, list)))
