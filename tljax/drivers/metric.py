"""Metric learning, the experiment (``experiments/metric.py``): a triplet or
Siamese embedding (:mod:`tljax.methods.metric_learning`) trained on some
classes, evaluated by retrieval (recall@k) and verification (ROC-AUC) on
held-out classes, beside the same metrics on the raw inputs.
"""

from __future__ import annotations

import os
import time

from tljax import models
from tljax import optim
from tljax.data import episodes
from tljax.drivers import common
from tljax.methods import metric_learning
from tljax.train import checkpoint


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains the embedding and evaluates it on held-out classes.

  Writes ``metrics.jsonl``, checkpoints, ``params/`` and ``results.json``
  (``metrics``: ``recall@1``, ``recall@5``, ``auc``, ``raw_recall@1``, ...).
  """
  t0 = time.time()
  common.validate(config)
  if config.loss not in metric_learning.LOSSES:
    raise ValueError(f"loss must be 'triplet' or 'contrastive', got "
                     f"{config.loss!r}")
  train_classes = list(config.train_classes)
  test_classes = list(config.test_classes)
  if set(train_classes) & set(test_classes):
    raise ValueError(f"train_classes {train_classes} and test_classes "
                     f"{test_classes} overlap; held-out classes must be "
                     "disjoint from the training classes.")
  train = common.load(config, config.data, classes=train_classes,
                      relabel=False)
  held_out = common.load(config, config.data, "test", classes=test_classes,
                         relabel=False)
  model = metric_learning.build_embedding_net(
      config.model, train.example_shape, modality=train.modality,
      dim=config.embedding_dim,
      normalize=config.normalize)
  params, model_state = models.init_variables(model, train.example_shape,
                                              config.seed)
  if config.init_from:
    params, model_state = common.load_into(
        config.init_from, params, config.dont_load, model_state=model_state)
  tx = optim.from_config(params, config.optim, total_steps=config.num_steps)
  if config.loss == "triplet":
    step = metric_learning.make_step(
        model, tx, loss="triplet", margin=config.margin,
        mining=config.mining, distance=config.distance)
    batches_from = lambda s: episodes.class_balanced_batches(  # noqa: E731
        train, classes_per_batch=config.classes_per_batch,
        examples_per_class=config.examples_per_class, seed=config.seed,
        start_step=s)
  else:
    step = metric_learning.make_step(
        model, tx, loss="contrastive", pos_margin=config.pos_margin,
        neg_margin=config.neg_margin, distance=config.distance)
    batches_from = lambda s: episodes.pair_batches(  # noqa: E731
        train, config.classes_per_batch * config.examples_per_class,
        seed=config.seed, start_step=s)
  ks = tuple(config.recall_ks)
  trainer = common.trainer(step, tx, config)
  evaluate = lambda s: metric_learning.evaluate(  # noqa: E731
      model, s.params, held_out, ks=ks, distance=config.distance,
      model_state=s.model_state)
  state, last = common.fit(
      trainer, trainer.init_state(params, model_state=model_state),
      batches_from, config, workdir=workdir, eval_fn=evaluate)
  metrics = evaluate(state)
  metrics.update({f"raw_{k}": v for k, v in
                  metric_learning.raw_input_baseline(held_out, ks=ks).items()})
  metrics["final_loss"] = last.get("loss", float("nan"))
  metrics["held_out_examples"] = len(held_out)
  checkpoint.save_params(os.path.join(workdir, "params"), state.params,
                         state.model_state)
  return common.finish(workdir, metrics, config, t0)
