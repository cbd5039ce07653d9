"""The transfer report: which fine-tuning strategy to use at which label
budget, answered by measurement (``experiments/transfer_report.py``).

:func:`train_and_evaluate` trains a model on the source domain once
(:mod:`tljax.drivers.train`, resumable, in ``<workdir>/source``), then for
each target label budget (labels per class) and each seed trains every
strategy on the same labelled target subset and measures accuracy on the
target test set:

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
(:class:`tljax.train.Trainer`). Outputs in ``workdir``: ``results.json``
(``metrics.accuracy[strategy][budget]`` with ``mean``, ``std``, ``runs``;
``metrics.best_strategy[budget]``), ``table.md`` and
``accuracy_vs_labels.png``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax

from tljax import data as data_lib
from tljax import evaluation
from tljax import losses
from tljax import models
from tljax import optim
from tljax import viz
from tljax import workdir as workdir_lib
from tljax.drivers import common
from tljax.methods import features as features_lib
from tljax.methods import finetune

PyTree = Any

STRATEGIES = ("scratch", "linear_probe", "freeze_first", "finetune", "l2_sp",
              "lwf", "discriminative", "gradual")
DEFAULT_STRATEGIES = STRATEGIES[:6]


class _Runner:
  """Trains the strategies; compiled steps are kept across budgets/seeds."""

  def __init__(self, config, *, model, source_model, source_params,
               cache_train: features_lib.FeatureCache, test_features, test):
    self.c, self.model, self.source_model = config, model, source_model
    self.keep_head = config.head_from_source
    self.source_params = source_params
    self.num_layers = model.backbone.num_layers
    self.cache_train, self.test_features, self.test = (cache_train,
                                                       test_features, test)
    self.trainers = common.Trainers(config, batch_size=config.batch_size,
                                    num_steps=config.num_steps)
    self._gradual: dict[int, Any] = {}

  def _tx(self, params, lr_rules=None):
    o = self.c.optim
    return optim.make_optimizer(params, name=o.name,
                                learning_rate=o.learning_rate,
                                lr_rules=lr_rules)

  def _train(self, name, params, train, seed, *, loss="finetune",
             lr_rules=None, extra=None, **loss_kwargs):
    def build():
      tx = self._tx(params, lr_rules)
      return finetune.make_step(self.model, tx, loss=loss, **loss_kwargs), tx
    return self.trainers.train(name, build, params, train.arrays(), seed,
                               extra=extra)

  def _accuracy(self, params):
    return evaluation.accuracy(self.model, finetune.target_params(params),
                               self.test)

  def run(self, name: str, train: data_lib.Dataset, seed: int) -> float:
    """Test accuracy of strategy ``name`` trained on ``train``."""
    c = self.c
    init = models.init_params(self.model, self.test.example_shape,
                              jax.random.key(1_000_003 + seed))
    if name == "scratch":
      return self._accuracy(self._train(name, init, train, seed))
    if name == "linear_probe":
      head = features_lib.head_params(self.source_params if self.keep_head
                                      else init)

      def build():
        tx = self._tx(head)
        return features_lib.make_step(self.model, tx), tx
      # A head alone is dense and tiny: one lax.scan beats a Python loop.
      head = self.trainers.train(
          name, build, head,
          {"features": self.cache_train.lookup(train.x), "y": train.y}, seed,
          scan=True)
      return features_lib.head_accuracy(self.model, head, self.test_features,
                                        self.test.y)
    keep = ("backbone/.*", "head/.*") if self.keep_head else ("backbone/.*",)
    params = finetune.transfer_layers(self.source_params, init, keep)
    if name == "finetune":
      return self._accuracy(self._train(name, params, train, seed))
    if name == "freeze_first":
      keep = finetune.layer_patterns(self.num_layers, c.freeze_layers,
                                     "first")
      return self._accuracy(self._train(
          name, params, train, seed, lr_rules=finetune.freeze_rules(keep)))
    if name == "discriminative":
      rules = finetune.discriminative_lr_rules(self.num_layers,
                                               decay=c.discriminative_decay)
      return self._accuracy(self._train(name, params, train, seed,
                                        lr_rules=rules))
    if name == "l2_sp":
      # Everything copied from the source is pulled towards it.
      mask = losses.l2_sp_shared_mask(
          params, [(".*", True)] if self.keep_head
          else [("backbone/.*", True), (".*", False)])
      return self._accuracy(self._train(
          name, params, train, seed, loss="l2_sp", shared_mask=mask,
          alpha=c.l2_sp.alpha, beta=c.l2_sp.beta,
          extra={"source_params": params}))
    if name == "lwf":
      params = finetune.lwf_params(params, self.source_params)
      return self._accuracy(self._train(
          name, params, train, seed, loss="lwf",
          source_model=self.source_model, weight=c.lwf.weight,
          temperature=c.lwf.temperature,
          extra={"source_params": self.source_params}))
    if name == "gradual":
      stages = finetune.gradual_unfreezing_stages(self.num_layers,
                                                  c.num_steps)
      params, _ = finetune.train_in_stages(
          params, stages,
          make_step=lambda tx: finetune.make_step(self.model, tx),
          make_tx=self._tx, arrays=train.arrays(), batch_size=c.batch_size,
          seed=seed, rng=jax.random.key(seed), trainers=self._gradual,
          parallel=c.parallel)
      return self._accuracy(params)
    raise ValueError(f"unknown strategy {name!r}")


def _check(config, source, target, model):
  common.check_sweep(config.strategies, STRATEGIES, config.budgets,
                     num_seeds=config.num_seeds)
  common.check_same_shape(
      source, [("target", target)],
      "the source model cannot read them. Choose domains with one input "
      "shape.")
  num_layers = model.backbone.num_layers
  if ("freeze_first" in config.strategies
      and not 0 < config.freeze_layers < num_layers):
    raise ValueError(f"freeze_layers must be in [1, {num_layers - 1}] for a "
                     f"backbone of {num_layers} layers, got "
                     f"{config.freeze_layers}")
  if config.head_from_source and source.num_classes != target.num_classes:
    raise ValueError(f"head_from_source needs the same classes in source and "
                     f"target, got {source.num_classes} and "
                     f"{target.num_classes}; set --config.head_from_source="
                     "False to give the target a new head.")


def _best(results, strategies, budgets):
  """The best strategy per budget, and those within one std of it."""
  best, close = {}, {}
  for k in budgets:
    ranked = sorted(strategies, key=lambda n: -results[n][k]["mean"])
    best[k] = ranked[0]
    top = results[ranked[0]][k]
    close[k] = [n for n in ranked[1:] if top["mean"] - results[n][k]["mean"]
                <= max(top["std"], results[n][k]["std"])]
  return best, close


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
  c = config
  source = common.load(c, c.source).require_labels()
  target = common.load(c, c.target).require_labels()
  test = common.load(c, c.target, "test", num_examples=c.eval_examples or None
                     ).require_labels(target.num_classes)
  shape = source.example_shape
  model_src = models.build_classifier(c.model, source.num_classes, shape)
  model = models.build_classifier(c.model, target.num_classes, shape)
  _check(c, source, target, model)
  strategies = list(c.strategies)
  budgets = [int(b) for b in c.budgets]
  source_params, src_metrics = common.source_params(
      c.pretrain, init_from=c.init_from, source=c.source, seed=c.seed,
      data_dir=c.data_dir, model_config=c.model, model=model_src,
      example_shape=shape, workdir=os.path.join(workdir, "source"))
  t_cache = time.time()
  cache = common.feature_cache(model_src, source_params, target.x,
                               workdir=workdir, name="target_train")
  test_features = common.feature_cache(model_src, source_params, test.x,
                                       workdir=workdir,
                                       name="target_test").features
  cache_seconds = time.time() - t_cache
  runner = _Runner(c, model=model, source_model=model_src,
                   source_params=source_params, cache_train=cache,
                   test_features=test_features, test=test)
  workdir_lib.say(
      f"target {c.target}: {len(target)} train / {len(test)} test examples, "
      f"{target.num_classes} classes; {len(strategies)} strategies x "
      f"{len(budgets)} budgets x {c.num_seeds} seeds, {c.num_steps} steps of "
      f"{c.batch_size} each")
  results, timing = common.run_sweep(
      c, c.target, strategies, budgets,
      [c.seed + i for i in range(c.num_seeds)], runner.run,
      num_classes=target.num_classes)
  names = [common.budget_name(b) for b in budgets]
  table_strategies = list(strategies)
  source_only = None
  if model_src.num_classes == target.num_classes:
    source_only = evaluation.accuracy(model_src, source_params, test)
    results["source_only"] = {k: common.summarize([source_only])
                              for k in names}
    table_strategies.append("source_only")
  best, close = _best(results, table_strategies, names)
  table = common.budgets_table(results, table_strategies, budgets, best=best,
                               suffix="")
  plot = viz.accuracy_vs_labels(
      os.path.join(workdir, "accuracy_vs_labels.png"), results, names,
      table_strategies,
      [b if b > 0 else len(target) / target.num_classes for b in budgets],
      title=f"{c.source} -> {c.target}, {c.num_seeds} seeds")
  head = ("heads start from the source head" if c.head_from_source
          else "new heads")
  lines = [f"Target test accuracy (%), mean ± std over {c.num_seeds} seeds; "
           f"source {c.source}, target {c.target}; {head}; {c.num_steps} "
           f"steps per run; best per budget in bold.", "", table, ""]
  for k in names:
    tie = (f" (within one std: {', '.join(close[k])})" if close[k] else "")
    lines.append(f"labels/class {k}: best {best[k]} "
                 f"{100 * results[best[k]][k]['mean']:.1f}%{tie}")
  text = "\n".join(lines)
  workdir_lib.write_text(os.path.join(workdir, "table.md"), text)
  workdir_lib.say("\n" + text)
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
  workdir_lib.write_results(workdir, metrics, c, table=table,
                            plot=os.path.basename(plot))
  workdir_lib.say(f"wrote {workdir}/results.json, table.md and "
                  f"{os.path.basename(plot)} in {time.time() - t0:.0f}s")
  return metrics
