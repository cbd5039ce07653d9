"""Progressive nets, the experiment (``experiments/progressive.py``): one
column per source domain (:mod:`tljax.methods.progressive`), then a new
column on a target with few labels, against the same with an untrained
first column, fine-tuning the source column, and a column from scratch.
"""

from __future__ import annotations

import os
import time
import jax
import jax.numpy as jnp

from tljax import models
from tljax import optim
from tljax import viz
from tljax import workdir as workdir_lib
from tljax.drivers import common
from tljax.methods import progressive
from tljax.models.progressive import ProgressiveNet

STRATEGIES = ("progressive", "progressive_untrained", "finetune", "scratch")


def _tx(config, params, rules=None):
  o = config.optim
  return optim.make_optimizer(params, name=o.name,
                              learning_rate=o.learning_rate,
                              grad_clip_norm=o.grad_clip_norm, lr_rules=rules)


def _train_sources(config, workdir, net):
  """Trains one column per source domain, each with the earlier frozen."""
  params = None
  shape = None
  for j, spec in enumerate(config.sources):
    ds = common.load(config, spec).require_labels()
    if shape is not None and ds.example_shape != shape:
      raise ValueError(f"source {spec!r} has examples of shape "
                       f"{ds.example_shape}, the first source {shape}; all "
                       "columns read the same input.")
    shape = ds.example_shape
    if j == 0:
      net = progressive.with_outputs(net, (ds.num_classes,))
      params = models.init_params(net, shape, config.seed)
    else:
      net, params = progressive.add_column(
          net, params, num_outputs=ds.num_classes, example_shape=shape,
          seed=config.seed + j)
    tx = _tx(config, params, progressive.freeze_earlier_rules(net))
    trainer = common.trainer(progressive.make_step(net, tx), tx, config)
    test = common.load(config, spec, "test")
    state, _ = common.fit(
        trainer, trainer.init_state(params),
        common.batches_from(config, ds.arrays()),
        config, workdir=workdir, num_steps=config.source_steps,
        eval_fn=lambda s, net=net, test=test: {
            "accuracy": progressive.accuracy(net, s.params, test)},
        name=f"column_{j}")
    params = state.params
  return net, params, shape


def train_and_evaluate(config, workdir: str) -> dict:
  """Source column(s), then the target with few labels; see the module
  docstring.

  Writes ``results.json`` (``metrics``: ``accuracy[strategy][budget]`` with
  mean, std and runs over seeds; ``target_accuracy`` (the progressive net
  at the first budget); ``source_accuracy`` of column 0 and
  ``source_accuracy_after`` the progressive training), ``table.md`` and
  ``accuracy.png``.
  """
  t0 = time.time()
  common.validate(config)
  strategies, budgets = common.check_sweep(
      config.strategies, STRATEGIES, config.budgets,
      num_seeds=config.num_seeds)
  if not config.sources:
    raise ValueError("progressive nets need at least one source domain "
                     "(config.sources).")
  col = config.column
  template = ProgressiveNet(num_outputs=(1,), features=tuple(col.features),
                            conv_channels=tuple(col.conv_channels),
                            kernel_size=col.kernel_size,
                            adapter_dim=col.adapter_dim)
  src_net, src_params, shape = _train_sources(config, workdir, template)
  last = src_net.num_columns - 1
  test = common.load(config, config.target, "test").require_labels()
  if test.example_shape != shape:
    raise ValueError(f"target {config.target!r} has examples of shape "
                     f"{test.example_shape}, the sources {shape}.")
  n_out = test.num_classes
  source_test = common.load(config, config.sources[0], "test")
  metrics: dict = {"source_accuracy": progressive.column_accuracy(
      src_net, src_params, source_test, 0)}
  if src_net.num_outputs[-1] == n_out:
    metrics["source_only_target_accuracy"] = progressive.accuracy(
        src_net, src_params, test)
  trainers = common.Trainers(config, batch_size=config.batch_size,
                             num_steps=config.target_steps)

  def train(name, net, params, data, seed, rules=None):
    # Strategies with the same net, loss and optimizer share one compiled
    # step: progressive / progressive_untrained, finetune / scratch.
    def build():
      tx = _tx(config, params, rules)
      return progressive.make_step(net, tx), tx
    return trainers.train(
        "two_columns" if name.startswith("progressive") else "one_column",
        build, params, data.arrays(), seed).params

  def run(name, data, seed):
    if name in ("progressive", "progressive_untrained"):
      base = src_params
      if name == "progressive_untrained":
        base = models.init_params(src_net, shape, seed + 1)
      net, params = progressive.add_column(
          src_net, base, num_outputs=n_out, example_shape=shape, seed=seed)
      before = params
      params = train(name, net, params, data, seed,
                     progressive.freeze_earlier_rules(net))
      if name == "progressive":
        # Frozen means frozen: column 0 still scores what it scored.
        return {"accuracy": progressive.accuracy(net, params, test),
                "earlier_columns_unchanged": all(
                    bool(jnp.array_equal(a, c)) for a, c in zip(
                        jax.tree.leaves(before["columns_0"]),
                        jax.tree.leaves(params["columns_0"]))),
                "source_accuracy_after": progressive.column_accuracy(
                    net, params, source_test, 0)}
    elif name == "finetune":
      net, params = progressive.single_column_from(
          src_net, src_params, last, num_outputs=n_out, example_shape=shape,
          seed=seed)
      params = train(name, net, params, data, seed)
    else:
      net = progressive.with_outputs(src_net, (n_out,))
      params = train(name, net, models.init_params(net, shape, seed), data,
                     seed)
    return progressive.accuracy(net, params, test)

  results, _, cells = common.run_sweep(
      config, config.target, strategies, budgets, common.run_seeds(config),
      run, num_classes=n_out, workdir=workdir)
  firsts = [c for c in cells.values() if isinstance(c, dict)]
  if firsts:
    metrics["earlier_columns_unchanged"] = all(
        c["earlier_columns_unchanged"] for c in firsts)
    metrics["source_accuracy_after"] = firsts[0]["source_accuracy_after"]
  table = common.budgets_table(results, strategies, budgets)
  metrics["accuracy"] = results
  head = "progressive" if "progressive" in strategies else strategies[0]
  names = [common.budget_name(b) for b in budgets]
  metrics["target_accuracy"] = results[head][names[0]]["mean"]
  workdir_lib.write_text(os.path.join(workdir, "table.md"), table)
  if config.plot:
    so = metrics.get("source_only_target_accuracy")
    viz.accuracy_bars(
        os.path.join(workdir, "accuracy.png"), results, names, strategies,
        f"{' -> '.join(config.sources)} -> {config.target}",
        baseline=(None if so is None
                  else ("source column, no target training", so)))
  return common.finish(workdir, metrics, config, t0, table)
