"""Zero-shot learning, the experiment (``experiments/zero_shot.py``): each
method of :mod:`tljax.methods.zero_shot` trained on the seen classes and
measured on the unseen ones against chance, over ``num_seeds`` runs.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax.numpy as jnp
import numpy as np

from tljax import models
from tljax import optim
from tljax import viz
from tljax import workdir as workdir_lib
from tljax.drivers import common
from tljax.methods import zero_shot as zsl

# Columns of the table: (metric, header).
COLUMNS = (("unseen_accuracy", "unseen acc."),
           ("unseen_per_class_accuracy", "unseen per-class"),
           ("seen_accuracy", "seen acc."),
           ("gzsl_unseen_accuracy", "GZSL unseen"),
           ("gzsl_seen_accuracy", "GZSL seen"),
           ("gzsl_harmonic_mean", "GZSL H"))


def _splits(config, attrs, names) -> list[tuple[list[int], list[int]]]:
  """One (seen, unseen) split per run: the configured one, or random ones."""
  c = attrs.shape[0]
  if config.unseen_classes:
    unseen = [int(u) for u in config.unseen_classes]
    seen = ([int(k) for k in config.seen_classes] if config.seen_classes
            else [k for k in range(c) if k not in unseen])
    zsl.check_split(attrs, seen, unseen, names)
    return [(seen, unseen)] * config.num_seeds
  if config.seen_classes:
    raise ValueError("seen_classes needs unseen_classes; leave both empty "
                     "for random splits.")
  return [zsl.random_split(attrs, config.num_unseen, config.seed + k,
                           names=names) for k in range(config.num_seeds)]


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains each zero-shot method on the seen classes and measures accuracy
  on the unseen classes against chance, over ``num_seeds`` runs.

  Run ``k`` uses seed ``seed + k`` for the initialisation and, unless
  ``unseen_classes`` fixes the split, for a random valid split of
  ``num_unseen`` unseen classes (:func:`tljax.methods.zero_shot.
  random_split`). Unseen classes are scored on all their examples of both
  data splits (none is ever trained on); seen-class accuracy on the test
  split.

  Writes ``results.json`` (``metrics``: ``<method>_unseen_accuracy`` etc. as
  mean, std and runs; ``chance_accuracy``; ``splits``; ``unseen_accuracy``
  of the best method), ``table.md`` and ``unseen_accuracy.png``; each
  training run's progress is in ``metrics_<method>_run<k>.jsonl``.
  """
  t0 = time.time()
  common.validate(config)
  methods = list(config.methods)
  bad = [m for m in methods if m not in zsl.METHODS]
  if bad or not methods:
    raise ValueError(f"methods must be a non-empty list from {zsl.METHODS}; "
                     f"got {methods}")
  if config.num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {config.num_seeds}")
  if config.dap_prior not in ("seen", "uniform"):
    raise ValueError(f"dap_prior must be 'seen' or 'uniform', got "
                     f"{config.dap_prior!r}")
  full_test = common.load(config, config.data, "test").require_labels()
  attrs, names = zsl.class_attributes(config.descriptions,
                                      full_test.num_classes)
  m_attrs = attrs.shape[1]
  splits = _splits(config, attrs, names)
  workdir_lib.say(f"zero-shot on {config.data}: {len(names)} attributes "
                  f"{list(names)}; unseen classes per run: "
                  f"{[u for _, u in splits]}")
  runs = {m: [] for m in methods}
  confusions: dict[str, np.ndarray] = {}
  shape = full_test.example_shape
  # One model, optimizer and trainer per method, compiled once for all runs
  # (the split's class descriptions travel in the state).
  built = {}
  for method in methods:
    model = zsl.build_model(method, config.model, shape,
                            num_attributes=m_attrs, dim=config.embed_dim,
                            class_hidden=config.class_hidden,
                            normalize=config.normalize,
                            modality=full_test.modality)
    more = zsl.example_inputs(model, m_attrs)
    params = models.init_params(model, shape, config.seed, *more)
    tx = optim.from_config(params, config.optim, total_steps=config.num_steps)
    kw = ({} if method == "dap" else
          dict(margin=config.margin, reduction=config.reduction))
    step = zsl.make_step(model, tx, method=method, **kw)
    built[method] = (model, more, common.trainer(step, tx, config))
  cap = config.max_train_examples if config.max_train_examples > 0 else None
  for k, (seen, unseen) in enumerate(splits):
    seed = config.seed + k
    # Seen classes relabelled 0..len(seen)-1 in the order of ``seen``.
    train = common.load(config, config.data, classes=seen, num_examples=cap)
    un = [common.load(config, config.data, s, classes=unseen, relabel=False)
          for s in ("train", "test")]
    unseen_x = np.concatenate([u.x for u in un])
    unseen_y = np.concatenate([u.y for u in un])
    seen_test = common.load(config, config.data, "test", classes=seen,
                            relabel=False)
    seen_attrs = attrs[seen]
    priors = seen_attrs.mean(0) if config.dap_prior == "seen" else None
    for method in methods:
      model, more, trainer = built[method]
      params, model_state = models.init_variables(model, shape, seed, *more)

      def seen_accuracy(s, method=method, model=model, seen=seen,
                        seen_test=seen_test, priors=priors):
        # Validation on the seen classes' test split (never the unseen).
        pred = zsl.predict_among(zsl.class_scores(
            method, model, s.params, seen_test.x, attrs, priors=priors,
            model_state=s.model_state), seen)
        return {"seen_accuracy": float(np.mean(pred == seen_test.y))}

      state, _ = common.fit(
          trainer, trainer.init_state(params, model_state=model_state, extra={
              "class_attributes": jnp.asarray(seen_attrs, jnp.float32)}),
          common.batches_from(config, train.arrays(), seed=seed),
          config, workdir=workdir, eval_fn=seen_accuracy, seed=seed,
          name=f"{method}_run{k}")
      m = zsl.evaluate(method, model, state.params, class_attributes=attrs,
                       seen=seen, unseen=unseen, unseen_x=unseen_x,
                       unseen_y=unseen_y, seen_x=seen_test.x,
                       seen_y=seen_test.y, priors=priors,
                       model_state=state.model_state)
      confusions[method] = confusions.get(method, 0) + m.pop(
          "unseen_confusion")
      runs[method].append(m)
      workdir_lib.say(f"[run {k}: unseen {unseen}] {method}: unseen_accuracy "
                      f"{m['unseen_accuracy']:.4f} (chance "
                      f"{1 / len(unseen):.3f})  seen_accuracy "
                      f"{m['seen_accuracy']:.4f}")
  chance = float(np.mean([1.0 / len(u) for _, u in splits]))
  metrics: dict[str, Any] = {
      "chance_accuracy": chance, "splits": [u for _, u in splits],
      "attributes": list(names)}
  rows = []
  for method in methods:
    for key in runs[method][0]:
      metrics[f"{method}_{key}"] = common.summarize(
          [r[key] for r in runs[method]])
    rows.append([method] + [common.mean_std(metrics[f"{method}_{key}"])
                            for key, _ in COLUMNS])
  header = [h if key != "unseen_accuracy"
            else f"{h} (chance {100 * chance:.1f})" for key, h in COLUMNS]
  table = common.markdown_table(["method"] + header, rows)
  # The headline number: the best method's mean unseen accuracy.
  best = max(methods, key=lambda m: metrics[f"{m}_unseen_accuracy"]["mean"])
  metrics["unseen_accuracy"] = metrics[f"{best}_unseen_accuracy"]["mean"]
  metrics["best_method"] = best
  workdir_lib.write_text(os.path.join(workdir, "table.md"), table)
  if config.plot:
    fixed = all(u == splits[0][1] for _, u in splits)
    viz.zero_shot_runs(os.path.join(workdir, "unseen_accuracy.png"), runs,
                       [u for _, u in splits], chance,
                       confusions if fixed else None)
  return common.finish(workdir, metrics, config, t0, table)
