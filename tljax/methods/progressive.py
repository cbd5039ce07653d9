r"""Progressive neural networks (Rusu et al. 2016, "Progressive Neural
Networks"): transfer by adding a column, never by changing an old one.

A :class:`tljax.models.progressive.ProgressiveNet` holds one column per task.
To learn task ``k``, :func:`add_column` copies the trained columns
``0..k-1`` into a net with one more column, and the optimizer freezes them
(:func:`freeze_earlier_rules`: ``lr_rules`` with ``None``, i.e.
``optax.masked(optax.set_to_zero())``), so only the new column and its
lateral adapters train, with :func:`column_loss` on the new task. Earlier
tasks keep their exact accuracy (no forgetting, tested bit for bit), and
the new column reads the old ones' features through the laterals.

  >>> import functools, jax
  >>> from tljax import optim
  >>> from tljax.models.progressive import ProgressiveNet
  >>> from tljax.train import state as state_lib
  >>> src = ProgressiveNet(num_outputs=(10,), features=(16,))
  >>> p0 = src.init(jax.random.key(0), jax.numpy.zeros((1, 40)))['params']
  >>> net, params = add_column(src, p0, num_outputs=10, example_shape=(40,),
  ...                          seed=1)
  >>> tx = optim.make_optimizer(params, learning_rate=1e-3,
  ...                           lr_rules=freeze_earlier_rules(net))
  >>> step = functools.partial(state_lib.train_step, tx=tx,
  ...     loss_fn=functools.partial(column_loss, model=net))

The experiment (``experiments/progressive.py``) trains column 0 on a source
domain, then compares on a target with few labels: the progressive net, the
same with an *untrained* frozen column 0 (a capacity control), fine-tuning
the source column, and a column trained from scratch.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tljax import data as data_lib
from tljax import losses
from tljax import optim
from tljax import params as params_lib
from tljax.methods import supervised
from tljax.models.progressive import ProgressiveNet
from tljax.train import loop
from tljax.train import state as state_lib
from tljax.train import lean

PyTree = Any
STRATEGIES = ("progressive", "progressive_untrained", "finetune", "scratch")


def freeze_earlier_rules(model: ProgressiveNet) -> list[tuple[str, Any]]:
  """``lr_rules`` that freeze every column but the last one."""
  k = model.num_columns
  if k < 2:
    return [(".*", 1.0)]
  earlier = "|".join(str(j) for j in range(k - 1))
  return [(f"columns_({earlier})/.*", None), (".*", 1.0)]


def with_outputs(model: ProgressiveNet, num_outputs: Sequence[int]
                 ) -> ProgressiveNet:
  """The same column architecture with other tasks' output sizes."""
  return ProgressiveNet(num_outputs=tuple(num_outputs),
                        features=tuple(model.features),
                        conv_channels=tuple(model.conv_channels),
                        kernel_size=model.kernel_size,
                        adapter_dim=model.adapter_dim)


def init_params(model: nn.Module, example_shape, seed: int) -> PyTree:
  """Host copy of ``model``'s parameters (compiled init, see
  :func:`tljax.methods.supervised.init_params`)."""
  return jax.device_get(supervised.init_params(model, example_shape, seed))


def add_column(model: ProgressiveNet, params: PyTree, *, num_outputs: int,
               example_shape: Sequence[int], seed: int
               ) -> tuple[ProgressiveNet, PyTree]:
  """A net with one more column: the trained ``params`` of ``model``'s
  columns, a freshly initialised new column ``columns_<K>``.

  Raises:
    ValueError: if ``params`` does not match ``model`` (e.g. a column
      missing or of another shape).
  """
  new = with_outputs(model, tuple(model.num_outputs) + (num_outputs,))
  init = init_params(new, example_shape, seed)
  merged = params_lib.merge_params(
      params, init, dont_load=(f"columns_{model.num_columns}/.*",))
  return new, merged


def column_loss(params, state, batch, rng, *, model: ProgressiveNet,
                column: int = -1, axis_name=None):
  """Cross-entropy of ``column``'s logits (default: the newest column) on
  ``batch['x']``/``batch['y']``; metrics: ``accuracy``."""
  del state, rng, axis_name
  logits = model.apply({"params": params}, batch["x"], column=column,
                       train=True)
  loss = losses.cross_entropy(logits, batch["y"], batch.get("w"))
  return loss, {"accuracy": losses.accuracy(logits, batch["y"])}


def accuracy(model: ProgressiveNet, params: PyTree,
             dataset: data_lib.Dataset) -> float:
  """Accuracy of the newest column's predictions on ``dataset``."""
  return supervised.evaluate(model, params, dataset)["accuracy"]


def column_accuracy(model: ProgressiveNet, params: PyTree,
                    dataset: data_lib.Dataset, column: int) -> float:
  """Accuracy of column ``column``'s outputs (an earlier task's) on
  ``dataset``."""
  early = with_outputs(model, tuple(model.num_outputs)[:column + 1])
  sub = {f"columns_{j}": params[f"columns_{j}"] for j in range(column + 1)}
  return supervised.evaluate(early, sub, dataset)["accuracy"]


def single_column_from(model: ProgressiveNet, params: PyTree, column: int, *,
                       num_outputs: int, example_shape, seed: int
                       ) -> tuple[ProgressiveNet, PyTree]:
  """A one-column net initialised from column ``column``'s own layers
  (not its laterals or head): the fine-tuning baseline."""
  single = with_outputs(model, (num_outputs,))
  init = init_params(single, example_shape, seed)
  src = params[f"columns_{column}"]
  loaded = {"columns_0": {k: v for k, v in src.items()
                          if k.startswith("layer_")}}
  return single, params_lib.merge_params(loaded, init,
                                         dont_load=("columns_0/head/.*",))


# ------------------------------------------------------------- experiment
def plot_accuracies(path: str, results: dict, budgets: Sequence[int],
                    strategies: Sequence[str], title: str = "",
                    source_only: float | None = None):
  """Grouped bars of mean ± std target accuracy, one group per budget; a
  dashed line for the source column used as it is, if given."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(1.8 + 1.6 * len(budgets) * len(strategies) / 2, 4))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  width = 0.8 / len(strategies)
  for i, name in enumerate(strategies):
    mean = [100 * results[name][str(b)]["mean"] for b in budgets]
    std = [100 * results[name][str(b)]["std"] for b in budgets]
    xs = np.arange(len(budgets)) + (i - (len(strategies) - 1) / 2) * width
    ax.bar(xs, mean, width, yerr=std, capsize=3, label=name)
  if source_only is not None:
    ax.axhline(100 * source_only, color="k", ls="--", lw=1,
               label="source column, no target training")
  ax.set_xticks(range(len(budgets)), [f"{b} labels/class" for b in budgets])
  ax.set_ylabel("target test accuracy (%)")
  ax.set_title(title)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _train_sources(config, workdir, net):
  """Trains one column per source domain, each with the earlier frozen."""
  params = None
  shape = None
  sources = list(config.sources)
  for j, spec in enumerate(sources):
    ds = data_lib.load(spec, "train", seed=config.seed,
                       data_dir=config.data_dir or None).require_labels()
    if shape is not None and ds.example_shape != shape:
      raise ValueError(f"source {spec!r} has examples of shape "
                       f"{ds.example_shape}, the first source {shape}; all "
                       "columns read the same input.")
    shape = ds.example_shape
    if j == 0:
      net = with_outputs(net, (ds.num_classes,))
      params = init_params(net, shape, config.seed)
    else:
      net, params = add_column(net, params, num_outputs=ds.num_classes,
                               example_shape=shape, seed=config.seed + j)
    tx = optim.make_optimizer(params, name=config.optim.name,
                              learning_rate=config.optim.learning_rate,
                              lr_rules=freeze_earlier_rules(net),
                              grad_clip_norm=config.optim.grad_clip_norm)
    state = state_lib.create_train_state(params, tx)
    step = functools.partial(state_lib.train_step, tx=tx,
                             loss_fn=functools.partial(column_loss, model=net))
    test = data_lib.load(spec, "test", seed=config.seed,
                         data_dir=config.data_dir or None)
    state, _ = loop.fit(
        state, step,
        lambda s, ds=ds: data_lib.batches(ds.arrays(), config.batch_size,
                                          seed=config.seed, start_step=s),
        num_steps=config.source_steps, rng=jax.random.key(config.seed),
        workdir=workdir, eval_fn=lambda p, net=net, test=test: {
            "accuracy": accuracy(net, p, test)},
        eval_every=config.eval_every, log_every=config.log_every,
        parallel_mode=config.parallel, name=f"column_{j}")
    params = state.params
  return net, params, shape


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Source column(s), then the target with few labels; see the module
  docstring.

  Writes ``results.json`` (``metrics``: ``accuracy[strategy][budget]`` with
  mean, std and runs over seeds; ``target_accuracy`` (the progressive net
  at the first budget); ``source_accuracy_before`` / ``_after`` of column 0
  around the progressive training), ``table.md`` and ``accuracy.png``.
  """
  t0 = time.time()
  strategies, budgets = lean.check_sweep(config.strategies, STRATEGIES,
                                         config.budgets)
  if not config.sources:
    raise ValueError("progressive nets need at least one source domain "
                     "(config.sources).")
  template = ProgressiveNet(num_outputs=(1,),
                            features=tuple(config.column.features),
                            conv_channels=tuple(config.column.conv_channels),
                            kernel_size=config.column.kernel_size,
                            adapter_dim=config.column.adapter_dim)
  src_net, src_params, shape = _train_sources(config, workdir, template)
  last = src_net.num_columns - 1
  load = functools.partial(data_lib.load, config.target,
                           data_dir=config.data_dir or None)
  test = load("test", seed=config.seed).require_labels()
  if test.example_shape != shape:
    raise ValueError(f"target {config.target!r} has examples of shape "
                     f"{test.example_shape}, the sources {shape}.")
  n_out = test.num_classes
  source_test = data_lib.load(config.sources[0], "test", seed=config.seed,
                              data_dir=config.data_dir or None)
  metrics: dict[str, Any] = {
      "source_accuracy": column_accuracy(src_net, src_params, source_test, 0)}
  if src_net.num_outputs[-1] == n_out:
    metrics["source_only_target_accuracy"] = accuracy(src_net, src_params,
                                                      test)
  trainers: dict[str, Any] = {}

  def run(name, net, params, train, seed, rules=None):
    # Strategies with the same net, loss and optimizer share one compiled
    # step: progressive / progressive_untrained, finetune / scratch.
    name = "two_columns" if name.startswith("progressive") else "one_column"
    if name not in trainers:
      tx = optim.make_optimizer(params, name=config.optim.name,
                                learning_rate=config.optim.learning_rate,
                                grad_clip_norm=config.optim.grad_clip_norm,
                                lr_rules=rules)
      step = functools.partial(state_lib.train_step, tx=tx,
                               loss_fn=functools.partial(column_loss,
                                                         model=net))
      trainers[name] = lean.LeanTrainer(step, tx=tx)
    state, _ = trainers[name].train_from(
        params, train.arrays(), batch_size=config.batch_size,
        num_steps=config.target_steps, seed=seed, rng=jax.random.key(seed))
    return state.params

  results = {s: {} for s in strategies}
  for b in budgets:
    runs = {s: [] for s in strategies}
    for k in range(config.num_seeds):
      seed = config.seed + 1000 * (k + 1)
      train = load("train", seed=seed, labels_per_class=b).require_labels(
          n_out)
      for name in strategies:
        if name in ("progressive", "progressive_untrained"):
          base = src_params
          if name == "progressive_untrained":
            base = init_params(src_net, shape, seed + 1)
          net, params = add_column(src_net, base, num_outputs=n_out,
                                   example_shape=shape, seed=seed)
          before = params
          params = run(f"{name}", net, params, train, seed,
                       freeze_earlier_rules(net))
          if name == "progressive" and "source_accuracy_after" not in metrics:
            # Frozen means frozen: column 0 still scores what it scored.
            same = all(bool(jnp.array_equal(a, c)) for a, c in zip(
                jax.tree.leaves(before["columns_0"]),
                jax.tree.leaves(params["columns_0"])))
            metrics["source_accuracy_after"] = column_accuracy(
                net, params, source_test, 0)
            metrics["earlier_columns_unchanged"] = same
        elif name == "finetune":
          net, params = single_column_from(src_net, src_params, last,
                                           num_outputs=n_out,
                                           example_shape=shape, seed=seed)
          params = run(name, net, params, train, seed)
        else:
          net = with_outputs(src_net, (n_out,))
          params = run(name, net, init_params(net, shape, seed), train, seed)
        acc = accuracy(net, params, test)
        runs[name].append(acc)
        loop.say(f"[{b} labels/class, seed {k}] {name}: target accuracy "
                 f"{acc:.4f}")
    for name in strategies:
      results[name][str(b)] = lean.summarize(runs[name])
  lines = ["| strategy | " + " | ".join(f"{b} labels/class" for b in budgets)
           + " |", "|" + "---|" * (len(budgets) + 1)]
  for name in strategies:
    lines.append(f"| {name} | " + " | ".join(
        f"{100 * results[name][str(b)]['mean']:.1f} ± "
        f"{100 * results[name][str(b)]['std']:.1f}" for b in budgets) + " |")
  table = "\n".join(lines)
  metrics["accuracy"] = results
  head = "progressive" if "progressive" in strategies else strategies[0]
  metrics["target_accuracy"] = results[head][str(budgets[0])]["mean"]
  metrics["wall_seconds"] = time.time() - t0
  if loop.is_chief():
    with open(os.path.join(workdir, "table.md"), "w") as f:
      f.write(table + "\n")
    if config.plot:
      plot_accuracies(os.path.join(workdir, "accuracy.png"), results, budgets,
                      strategies, f"{' -> '.join(config.sources)} -> "
                      f"{config.target}",
                      metrics.get("source_only_target_accuracy"))
  loop.write_results(workdir, metrics, config)
  loop.say(table)
  return metrics
