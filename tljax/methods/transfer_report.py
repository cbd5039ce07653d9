"""The transfer report: which fine-tuning strategy to use at which label
budget, answered by measurement.

:func:`train_and_evaluate` (``experiments/transfer_report.py``) pretrains a
model on the source domain once (:func:`tljax.methods.supervised.
train_and_evaluate`, resumable, in ``<workdir>/source``), then for each
target label budget (labels per class) and each seed trains every strategy
on the same labelled target subset and measures accuracy on the target test
set:

==============  ==============================================================
scratch         target only, random initialisation (no transfer)
linear_probe    frozen source backbone, features cached once
                (:mod:`tljax.methods.features`), a linear head trained
freeze_first    source backbone, its first ``freeze_layers`` layers frozen,
                the rest and the head trained (Yosinski et al., 2014)
finetune        source backbone, everything trained
l2_sp           ``finetune`` pulled towards the source weights (Li et al.,
                2018)
lwf             ``finetune`` keeping the source model's outputs on the target
                inputs through its old head (Li & Hoiem, 2016)
discriminative  ``finetune`` with per-layer rates (ULMFiT), not in the default
gradual         gradual unfreezing from the top (ULMFiT), not in the default
source_only     the source model as it is (only if the label sets agree)
==============  ==============================================================

Transferred strategies get a new, randomly initialised head (the general
case: the target's classes may differ); with ``head_from_source=True`` and
the same classes in both domains, they start from the source head instead
(and L2-SP pulls the head towards it too).

All strategies of one budget see the same labelled examples, the same
number of steps and batches of the same size; each strategy's step is
compiled once and reused for every budget and seed
(:class:`tljax.train.lean.LeanTrainer`). Outputs in ``workdir``:
``results.json`` (``metrics.accuracy[strategy][budget]`` with ``mean``,
``std``, ``runs``; ``metrics.best_strategy[budget]``), ``table.md`` and
``accuracy_vs_labels.png``.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from tljax import data as data_lib
from tljax import losses
from tljax import optim
from tljax import params as params_lib
from tljax.methods import features as features_lib
from tljax.methods import finetune
from tljax.methods import supervised
from tljax.train import checkpoint
from tljax.train import loop
from tljax.train import state as state_lib
from tljax.train import lean

PyTree = Any

STRATEGIES = ("scratch", "linear_probe", "freeze_first", "finetune", "l2_sp",
              "lwf", "discriminative", "gradual")
DEFAULT_STRATEGIES = STRATEGIES[:6]

# --config.quick=True: seconds, for smoke tests (a small MLP, few steps).
QUICK = dict(seeds=2, budgets=(1, 0), num_steps=6, batch_size=16,
             eval_examples=200, freeze_layers=1)
QUICK_PRETRAIN = dict(num_steps=10, batch_size=16, eval_every=0, log_every=10,
                      checkpoint_every=0)


def budget_name(budget: int) -> str:
  return "all" if budget <= 0 else str(budget)


def _settings(config) -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict(config.to_dict())
  if s.quick:
    s.update(QUICK)
    s.model = ml_collections.ConfigDict({"name": "mlp",
                                         "features": (32, 32)})
    s.pretrain.update(QUICK_PRETRAIN)
    s.pretrain.optim.warmup_steps = 0
  unknown = [n for n in s.strategies if n not in STRATEGIES]
  if unknown or not s.strategies:
    raise ValueError(f"unknown strategies {unknown or '(none given)'}; choose "
                     f"from {list(STRATEGIES)}")
  if not s.budgets:
    raise ValueError("budgets is empty; give labels per class, e.g. (1, 5, 0) "
                     "with 0 meaning all labels")
  if s.seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {s.seeds}")
  return s


def _pretrain_config(s) -> ml_collections.ConfigDict:
  """The :mod:`tljax.methods.supervised` config of the source run."""
  c = ml_collections.ConfigDict(s.pretrain.to_dict())
  c.source, c.target, c.data_dir, c.seed = s.source, s.target, s.data_dir, s.seed
  c.model = ml_collections.ConfigDict(s.model.to_dict())
  c.train_on, c.labels_per_class = "source", -1
  c.init_from, c.dont_load = "", ()
  c.parallel = "single"
  return c


def _source_params(s, model, example_shape, workdir):
  """Pretrains ``model`` on the source, or loads ``init_from``.

  Returns the parameters and the source run's metrics.
  """
  if s.init_from:
    loaded = checkpoint.load_params(s.init_from)
    # Checks names and shapes against the model, with one clear error.
    params = params_lib.merge_params(
        loaded, lean.compiled_init(model, example_shape)(
            jax.random.key(s.seed)))
    loop.say(f"source model loaded from {s.init_from}")
    return params, {}
  loop.say(f"pretraining on {s.source} ({s.pretrain.num_steps} steps)")
  src_dir = os.path.join(workdir, "source")
  metrics = supervised.train_and_evaluate(_pretrain_config(s), src_dir)
  return checkpoint.load_params(src_dir), metrics


class _Runner:
  """Trains the strategies; compiled steps are kept across budgets/seeds."""

  def __init__(self, s, *, model, source_model, source_params, num_layers,
               cache_train: features_lib.FeatureCache, test_features, test,
               keep_head: bool):
    self.s, self.model, self.source_model = s, model, source_model
    self.keep_head = keep_head
    self.source_params = source_params
    self.num_layers = num_layers
    self.cache_train, self.test_features, self.test = (cache_train,
                                                       test_features, test)
    self._trainers: dict[str, Any] = {}
    self._init = lean.compiled_init(model, test.example_shape)
    self._ce = functools.partial(supervised.classification_loss, model=model)

  def _tx(self, params, lr_rules=None):
    s = self.s
    return optim.make_optimizer(params, name=s.optimizer,
                                learning_rate=s.learning_rate,
                                lr_rules=lr_rules)

  def _trainer(self, name, params, loss_fn, lr_rules=None):
    if name not in self._trainers:
      tx = self._tx(params, lr_rules)
      step = functools.partial(state_lib.train_step, loss_fn=loss_fn, tx=tx)
      # A head alone is dense and tiny: one lax.scan beats a Python loop.
      self._trainers[name] = lean.LeanTrainer(
          step, scan=name == "linear_probe", tx=tx)
    return self._trainers[name]

  def _train(self, name, params, loss_fn, train, seed, *, lr_rules=None,
             extra=None, arrays=None):
    trainer = self._trainer(name, params, loss_fn, lr_rules)
    state, _ = trainer.train_from(
        params, arrays or train.arrays(), batch_size=self.s.batch_size,
        num_steps=self.s.num_steps, seed=seed, rng=jax.random.key(seed),
        extra=extra)
    return state.params

  def _accuracy(self, params):
    return supervised.evaluate(self.model, finetune.target_params(params),
                               self.test)["accuracy"]

  def run(self, name: str, train: data_lib.Dataset, seed: int) -> float:
    """Test accuracy of strategy ``name`` trained on ``train``."""
    s = self.s
    init = self._init(jax.random.key(1_000_003 + seed))
    if name == "scratch":
      return self._accuracy(self._train(name, init, self._ce, train, seed))
    if name == "linear_probe":
      head = features_lib.head_params(self.source_params if self.keep_head
                                      else init)
      loss_fn = functools.partial(features_lib.head_loss, model=self.model)
      arrays = {"features": self.cache_train.lookup(train.x), "y": train.y}
      head = self._train(name, head, loss_fn, train, seed, arrays=arrays)
      return features_lib.head_accuracy(self.model, head, self.test_features,
                                        self.test.y)
    keep = ("backbone/.*", "head/.*") if self.keep_head else ("backbone/.*",)
    params = finetune.transfer_layers(self.source_params, init, keep)
    if name == "finetune":
      return self._accuracy(self._train(name, params, self._ce, train, seed))
    if name == "freeze_first":
      keep = finetune.layer_patterns(self.num_layers, s.freeze_layers,
                                     "first")
      return self._accuracy(self._train(
          name, params, self._ce, train, seed,
          lr_rules=finetune.freeze_rules(keep)))
    if name == "discriminative":
      rules = finetune.discriminative_lr_rules(self.num_layers,
                                               decay=s.discriminative_decay)
      return self._accuracy(self._train(name, params, self._ce, train, seed,
                                        lr_rules=rules))
    if name == "l2_sp":
      # Everything copied from the source is pulled towards it.
      mask = losses.l2_sp_shared_mask(
          params, [(".*", True)] if self.keep_head
          else [("backbone/.*", True), (".*", False)])
      loss_fn = functools.partial(finetune.l2_sp_loss, model=self.model,
                                  shared_mask=mask, alpha=s.l2_sp.alpha,
                                  beta=s.l2_sp.beta)
      return self._accuracy(self._train(
          name, params, loss_fn, train, seed,
          extra={"source_params": params}))
    if name == "lwf":
      params = finetune.lwf_params(params, self.source_params)
      loss_fn = functools.partial(finetune.lwf_loss, model=self.model,
                                  source_model=self.source_model,
                                  weight=s.lwf.weight,
                                  temperature=s.lwf.temperature)
      return self._accuracy(self._train(
          name, params, loss_fn, train, seed,
          extra={"source_params": self.source_params}))
    if name == "gradual":
      stages = finetune.gradual_unfreezing_stages(self.num_layers,
                                                  s.num_steps)
      trainers = self._trainers.setdefault("gradual", {})
      params, _ = finetune.train_in_stages(
          params, stages,
          make_step=lambda tx: functools.partial(
              state_lib.train_step, loss_fn=self._ce, tx=tx),
          make_tx=self._tx, arrays=train.arrays(), batch_size=s.batch_size,
          seed=seed, rng=jax.random.key(seed), trainers=trainers)
      return self._accuracy(params)
    raise ValueError(f"unknown strategy {name!r}")


def format_table(results: dict, budgets, strategies, best: dict) -> str:
  """A markdown table of mean ± std accuracy (%) per strategy and budget."""
  head = "| strategy | " + " | ".join(budget_name(b) for b in budgets) + " |"
  lines = [head, "|" + "---|" * (len(budgets) + 1)]
  for name in strategies:
    cells = []
    for b in budgets:
      r = results[name][budget_name(b)]
      cell = f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}"
      cells.append(f"**{cell}**" if best[budget_name(b)] == name else cell)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_accuracy_vs_labels(path: str, results: dict, budgets, strategies,
                            all_per_class: float, title: str = ""):
  """Accuracy against labels per class, one line (mean ± std) per strategy.

  "All labels" is drawn at the average labelled examples per class.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  xs = [b if b > 0 else all_per_class for b in budgets]
  order = np.argsort(xs)
  fig = Figure(figsize=(7, 4.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for name in strategies:
    mean = np.array([results[name][budget_name(budgets[i])]["mean"]
                     for i in order])
    std = np.array([results[name][budget_name(budgets[i])]["std"]
                    for i in order])
    x = np.array(xs)[order]
    style = "--" if name == "source_only" else "-o"
    line, = ax.plot(x, 100 * mean, style, label=name, markersize=4)
    ax.fill_between(x, 100 * (mean - std), 100 * (mean + std), alpha=0.15,
                    color=line.get_color())
  ax.set_xscale("log")
  ax.set_xticks(np.array(xs)[order])
  ax.set_xticklabels([budget_name(budgets[i]) for i in order])
  ax.set_xlabel("target labels per class")
  ax.set_ylabel("target test accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs the transfer report; see the module docstring.

  Args:
    config: the ``experiments/configs/transfer_report.py`` config.
    workdir: output directory.

  Returns:
    The ``metrics`` written to ``results.json``.

  Raises:
    ValueError: on unknown strategies, an empty budget list, a target whose
      examples differ in shape from the source's, or an unlabelled target.
  """
  t0 = time.time()
  s = _settings(config)
  os.makedirs(workdir, exist_ok=True)
  source = data_lib.load(s.source, "train", seed=s.seed,
                         data_dir=s.data_dir or None).require_labels()
  load = functools.partial(data_lib.load, s.target,
                           data_dir=s.data_dir or None)
  target = load("train", seed=s.seed).require_labels()
  test = load("test", seed=s.seed,
              num_examples=s.eval_examples or None).require_labels(
                  target.num_classes)
  shape = source.example_shape
  if target.example_shape != shape:
    raise ValueError(f"target {s.target!r} has examples of shape "
                     f"{target.example_shape}, the source {s.source!r} has "
                     f"{shape}; the source model cannot read them. "
                     "Choose domains with one input shape.")
  model_src = supervised.build_model(s, source.num_classes, shape)
  model = supervised.build_model(s, target.num_classes, shape)
  num_layers = model.backbone.num_layers
  if "freeze_first" in s.strategies and not 0 < s.freeze_layers < num_layers:
    raise ValueError(f"freeze_layers must be in [1, {num_layers - 1}] for a "
                     f"backbone of {num_layers} layers, got {s.freeze_layers}")
  if s.head_from_source and source.num_classes != target.num_classes:
    raise ValueError(f"head_from_source needs the same classes in source and "
                     f"target, got {source.num_classes} and "
                     f"{target.num_classes}; set --config.head_from_source="
                     "False to give the target a new head.")
  source_params, src_metrics = _source_params(s, model_src, shape, workdir)
  t_cache = time.time()
  cache = features_lib.FeatureCache.build(
      model_src, source_params, target.x, workdir=workdir,
      name="target_train")
  test_features = features_lib.FeatureCache.build(
      model_src, source_params, test.x, workdir=workdir,
      name="target_test").features
  cache_seconds = time.time() - t_cache
  runner = _Runner(s, model=model, source_model=model_src,
                   source_params=source_params, num_layers=num_layers,
                   cache_train=cache, test_features=test_features, test=test,
                   keep_head=s.head_from_source)
  strategies = list(s.strategies)
  budgets = [int(b) for b in s.budgets]
  results = {n: {} for n in strategies}
  timing = {n: 0.0 for n in strategies}
  loop.say(f"target {s.target}: {len(target)} train / {len(test)} test "
           f"examples, {target.num_classes} classes; {len(strategies)} "
           f"strategies x {len(budgets)} budgets x {s.seeds} seeds, "
           f"{s.num_steps} steps of {s.batch_size} each")
  for b in budgets:
    subsets = [load("train", seed=s.seed + i,
                    labels_per_class=b if b > 0 else None)
               for i in range(s.seeds)]
    for name in strategies:
      t = time.time()
      runs = [runner.run(name, ds, s.seed + i)
              for i, ds in enumerate(subsets)]
      timing[name] += time.time() - t
      results[name][budget_name(b)] = r = lean.summarize(runs)
      loop.say(f"  labels/class {budget_name(b):>4}  {name:<14} "
               f"{100 * r['mean']:5.1f} ± {100 * r['std']:4.1f}  "
               f"({time.time() - t:.1f}s)")
  table_strategies = list(strategies)
  source_only = None
  if model_src.num_classes == target.num_classes:
    source_only = supervised.evaluate(model_src, source_params,
                                      test)["accuracy"]
    results["source_only"] = {budget_name(b): lean.summarize([source_only])
                              for b in budgets}
    table_strategies.append("source_only")
  best, close = {}, {}
  for b in budgets:
    k = budget_name(b)
    ranked = sorted(table_strategies, key=lambda n: -results[n][k]["mean"])
    best[k] = ranked[0]
    top = results[ranked[0]][k]
    # Strategies whose mean lies within one std (of either) of the best.
    close[k] = [n for n in ranked[1:] if top["mean"] - results[n][k]["mean"]
                <= max(top["std"], results[n][k]["std"])]
  table = format_table(results, budgets, table_strategies, best)
  per_class = len(target) / target.num_classes
  plot_path = os.path.join(workdir, "accuracy_vs_labels.png")
  plot_accuracy_vs_labels(
      plot_path, results, budgets, table_strategies, per_class,
      title=f"{s.source} -> {s.target}, {s.seeds} seeds")
  head = ("heads start from the source head" if s.head_from_source
          else "new heads")
  lines = [f"Target test accuracy (%), mean ± std over {s.seeds} seeds; "
           f"source {s.source}, target {s.target}; {head}; {s.num_steps} "
           f"steps per run; best per budget in bold.", "", table, ""]
  for b in budgets:
    k = budget_name(b)
    tie = (f" (within one std: {', '.join(close[k])})" if close[k] else "")
    lines.append(f"labels/class {k}: best {best[k]} "
                 f"{100 * results[best[k]][k]['mean']:.1f}%{tie}")
  text = "\n".join(lines)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(text + "\n")
  loop.say("\n" + text)
  metrics = {"accuracy": results, "best_strategy": best,
             "within_one_std_of_best": close,
             "source_accuracy_on_source": src_metrics.get("source_accuracy"),
             "source_only_accuracy": source_only,
             "train_seconds_per_strategy": timing,
             "feature_cache_seconds": cache_seconds,
             "target_train_examples": len(target),
             "target_test_examples": len(test),
             "wall_seconds": time.time() - t0}
  metrics = {k: v for k, v in metrics.items() if v is not None}
  loop.write_results(workdir, metrics, s, table=table,
                     plot=os.path.basename(plot_path))
  loop.say(f"wrote {workdir}/results.json, table.md and "
           f"{os.path.basename(plot_path)} in {time.time() - t0:.0f}s")
  return metrics
