"""Train a classifier on one domain, evaluate on both, save it for transfer
(``experiments/train.py``).

    # Train a source model, evaluate on source and target, save params.
    python experiments/train.py --workdir=/tmp/src
    # Load it (all but the head) into a new model and train on the target.
    python experiments/train.py --workdir=/tmp/tgt --config.train_on=target \
        --config.init_from=/tmp/src
"""

from __future__ import annotations

import os
import time

from tljax import evaluation
from tljax import models
from tljax import optim
from tljax import params as params_lib
from tljax import viz
from tljax import workdir as workdir_lib
from tljax.drivers import common
from tljax.methods import supervised
from tljax.train import checkpoint


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains a classifier on ``config.train_on`` and evaluates on both domains.

  Writes ``metrics.jsonl``, checkpoints, ``params/`` (for a later
  ``init_from``), ``training_curves.png`` and ``results.json``
  (``metrics``: ``source_accuracy``, ``target_accuracy``,
  ``train_accuracy``, ...) in ``workdir``.
  """
  t0 = time.time()
  common.validate(config)
  if config.train_on not in ("source", "target"):
    raise ValueError(f"train_on must be 'source' or 'target', got "
                     f"{config.train_on!r}")
  budget = config.labels_per_class if config.labels_per_class > 0 else None
  train_spec = config.source if config.train_on == "source" else config.target
  train = common.load(config, train_spec, labels_per_class=budget)
  train.require_labels()
  evals = {}
  for domain in ("source", "target"):
    spec = config[domain]
    if not spec:
      continue
    ds = common.load(config, spec, "test")
    common.check_same_shape(train, [(domain, ds)],
                            "both domains must share one input shape.")
    if ds.y is not None and ds.num_classes == train.num_classes:
      evals[domain] = ds
  model = models.build_classifier(config.model, train.num_classes,
                                  train.example_shape, train.modality)
  params, model_state = models.init_variables(model, train.example_shape,
                                              config.seed)
  if config.init_from:
    params, model_state = common.load_into(
        config.init_from, params, config.dont_load, model_state=model_state)
    workdir_lib.say(f"loaded parameters from {config.init_from} "
                    f"(dont_load={tuple(config.dont_load)})")
  tx = optim.from_config(params, config.optim, total_steps=config.num_steps)
  if config.optim.lr_rules:
    workdir_lib.say("lr_rules (None = frozen):\n" + params_lib.describe_rules(
        params, [tuple(r) for r in config.optim.lr_rules], what="lr_rules"))
  trainer = common.trainer(supervised.make_step(
      model, tx, freeze_bn=config.get("freeze_bn", False)), tx, config)
  eval_set = evals.get(config.train_on)
  eval_fn = ((lambda s: evaluation.evaluate(model, s.params, eval_set,
                                            model_state=s.model_state))
             if eval_set is not None else None)
  state, last = common.fit(
      trainer, trainer.init_state(params, model_state=model_state),
      common.batches_from(config, train.arrays()),
      config, workdir=workdir, eval_fn=eval_fn)
  metrics = {"train_examples": len(train),
             "train_accuracy": common.accuracy(model, state, train),
             "final_loss": last.get("loss", float("nan"))}
  for domain, ds in evals.items():
    metrics[f"{domain}_accuracy"] = common.accuracy(model, state, ds)
  # Every process calls orbax; it writes from the primary one.
  checkpoint.save_params(os.path.join(workdir, "params"), state.params,
                         state.model_state)
  viz.training_curves(workdir)
  return common.finish(workdir, metrics, config, t0,
                       backbone=models.backbone_name(
                           config.model, train.example_shape, train.modality))
