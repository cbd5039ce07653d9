"""Metric learning, the experiment (``experiments/metric.py``): an
embedding (:mod:`tljax.methods.metric_learning`) trained with any of its
losses (``config.loss``: ``triplet``, ``contrastive``, ``supcon``,
``ntxent``, ``multi_similarity``, ``arcface``, ``cosface``,
``proxy_anchor``, or ``softmax``: a plain classifier's last hidden layer, the
baseline) on some classes, evaluated by retrieval (recall@k, MAP@R,
R-precision) and verification (ROC-AUC) on held-out classes, beside the same
metrics on the raw inputs.

The losses built on cosine similarity (all but ``triplet``,
``contrastive`` and ``softmax``) see only the embeddings' directions, so
their embeddings are evaluated with the cosine distance; the other three use
``config.distance``.
"""

from __future__ import annotations

import os
import time

import jax

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
    raise ValueError(f"loss must be one of "
                     f"{', '.join(metric_learning.LOSSES)}; got "
                     f"{config.loss!r}")
  train_classes = list(config.train_classes)
  test_classes = list(config.test_classes)
  if set(train_classes) & set(test_classes):
    raise ValueError(f"train_classes {train_classes} and test_classes "
                     f"{test_classes} overlap; held-out classes must be "
                     "disjoint from the training classes.")
  loss_kwargs = loss_settings(config)
  # Labels 0..len(train_classes)-1: the rows of a proxy loss's class matrix.
  train = common.load(config, config.data, classes=train_classes,
                      relabel=True)
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
  optim_config = config.optim
  if config.loss in metric_learning.PROXY_LOSSES:
    params = dict(params, proxies=metric_learning.init_proxies(
        jax.random.fold_in(jax.random.key(config.seed), 1),
        len(train_classes), config.embedding_dim))
    optim_config = optim_config.copy_and_resolve_references()
    with optim_config.unlocked():
      optim_config.lr_rules = ((("proxies", config.proxy_lr_multiplier),)
                               + tuple(tuple(r) for r in optim_config.get(
                                   "lr_rules", None) or ((".*", 1.0),)))
  tx = optim.from_config(params, optim_config, total_steps=config.num_steps)
  step = metric_learning.make_step(model, tx, loss=config.loss, **loss_kwargs)
  if config.loss == "contrastive":
    batches_from = lambda s: episodes.pair_batches(  # noqa: E731
        train, config.classes_per_batch * config.examples_per_class,
        seed=config.seed, start_step=s)
  else:
    sampler = episodes.ClassBalancedSampler(
        train, classes_per_batch=config.classes_per_batch,
        examples_per_class=config.examples_per_class, seed=config.seed)
    batches_from = sampler.batches
  distance = eval_distance(config)
  ks = tuple(config.recall_ks)
  trainer = common.trainer(step, tx, config)
  evaluate = lambda s: metric_learning.evaluate(  # noqa: E731
      model, s.params, held_out, ks=ks, distance=distance,
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


def loss_settings(config) -> dict:
  """The keyword settings of ``config.loss`` from the config."""
  if config.loss == "triplet":
    return dict(margin=config.margin, mining=config.mining,
                distance=config.distance)
  if config.loss == "contrastive":
    return dict(pos_margin=config.pos_margin, neg_margin=config.neg_margin,
                distance=config.distance)
  kw = dict(config.get(config.loss) or {})
  if config.loss == "multi_similarity" and kw.get("epsilon", 0) < 0:
    kw["epsilon"] = None   # a negative epsilon: every pair, no mining
  return kw


def eval_distance(config) -> str:
  """The distance retrieval uses: cosine for the losses that see only
  directions, ``config.distance`` for triplet, contrastive and softmax."""
  return (config.distance if config.loss in ("triplet", "contrastive",
                                            "softmax")
          else "cosine")
