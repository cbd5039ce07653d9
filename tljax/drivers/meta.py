"""The episodic few-shot experiment shared by the meta-learners
(``experiments/meta.py``).

:func:`train_and_evaluate` runs any of

- ``protonet``: prototypical networks (:mod:`tljax.methods.protonet`),
- ``maml``: MAML, second or first order (:mod:`tljax.methods.maml`),
- ``anil``: MAML with the inner loop on the head only (Raghu et al. 2020;
  ``config.maml.inner_rules``, which the ``anil`` config sets),
- ``metasgd``: Meta-SGD, MAML with learned per-parameter inner rates
  (:func:`tljax.methods.maml.metasgd_loss`),
- ``reptile``: Reptile (:mod:`tljax.methods.reptile`),
- ``hypernet``: the model-based learner that writes the head's weights
  (:mod:`tljax.methods.hypernet`),
- ``baseline``: a classifier pretrained with cross-entropy on the meta-train
  classes, then nearest class centroid of its backbone features on each test
  episode (Chen et al. 2019, "A Closer Look at Few-shot Classification"),

on N-way K-shot episodes of held-out classes (:mod:`tljax.data.episodes`),
and reports the mean accuracy over many test episodes with its 95% interval.
With ``task='sinusoid'`` it runs MAML (``maml``), Reptile (``reptile``) or
a model pretrained on all tasks jointly (``pretrained``) on the sinusoid
family and reports the
query MSE after each number of inner SGD steps in ``eval_inner_steps``
(both fine-tuned the same way, as in Finn et al. 2017, figure 2).

  python experiments/meta.py --workdir=/tmp/tljax/meta \
      --config=experiments/configs/meta.py:protonet
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tljax import evaluation
from tljax import models
from tljax import optim
from tljax import workdir as workdir_lib
from tljax.data import episodes
from tljax.drivers import common
from tljax.methods import hypernet
from tljax.methods import maml
from tljax.methods import protonet
from tljax.methods import reptile
from tljax.methods import supervised
from tljax.train import checkpoint

PyTree = Any
CLASSIFICATION_METHODS = ("protonet", "maml", "anil", "metasgd", "reptile",
                          "hypernet", "baseline")
SINUSOID_METHODS = ("maml", "reptile", "pretrained")


def _fit(config, workdir, params, make_step, batches_from, eval_fn=None,
         model_state=None):
  """Trains ``params`` with ``make_step(tx)`` and the config's optimizer
  and loop settings; returns the final train state and last metrics."""
  tx = optim.from_config(params, config.optim, total_steps=config.num_steps)
  trainer = common.trainer(make_step(tx), tx, config)
  return common.fit(trainer, trainer.init_state(params,
                                                model_state=model_state),
                    batches_from, config, workdir=workdir, eval_fn=eval_fn)


def samplers(config) -> tuple[episodes.EpisodeSampler,
                              episodes.EpisodeSampler]:
  """The meta-train and meta-test episode samplers a config describes:
  train-split examples of ``train_classes``, test-split examples of the
  disjoint ``test_classes``."""
  train, classes = meta_train_data(config)
  return episodes.meta_split(
      train, common.load(config, config.data, "test"),
      train_classes=classes, test_classes=config.test_classes,
      n_way=config.n_way, k_shot=config.k_shot, n_query=config.n_query,
      seed=config.seed, test_n_query=config.test_n_query)


def meta_train_data(config):
  """``(data set, class ids)`` every method meta-trains (or pretrains) on:
  the train split's ``train_classes``, each rotated by multiples of 90
  degrees into new classes when ``train_rotations`` is 2 or 4
  (:func:`tljax.data.episodes.rotated_classes`; the held-out classes are
  never rotated)."""
  data = common.load(config, config.data)
  return episodes.rotated_classes(data, config.train_classes,
                                  config.get("train_rotations", 1))


def raw_nearest_centroid(config) -> tuple[float, float]:
  """Test accuracy of nearest centroid on raw (flattened) inputs: the
  no-learning reference, on the same test episodes as the methods."""
  _, test_s = samplers(config)
  acc_fn = jax.jit(lambda b: protonet.centroid_accuracies(
      lambda x: x.reshape((x.shape[0], -1)), b, config.n_way))
  return evaluation.episodes_accuracy(acc_fn, test_s, config.test_episodes)


def _test_lr(config) -> float:
  """Evaluation fine-tunes at the (first) inner rate (plain SGD, or
  Reptile's inner optimizer: :func:`_inner_tx`)."""
  lr = config.maml.inner_lr
  return float(lr[0] if isinstance(lr, (tuple, list)) else lr)


def _inner_tx(config):
  """Reptile's inner optimizer (``config.maml.inner_optimizer``, ``sgd`` or
  ``adam`` with ``inner_b1``), used in meta-training and in the test-time
  fine-tuning, as Nichol et al.'s evaluation does. The other learners'
  inner loop is plain SGD: a different setting there is an error."""
  m = config.maml
  name, b1 = m.get("inner_optimizer", "sgd"), m.get("inner_b1", 0.0)
  if name != "sgd" and (config.method != "reptile"
                        or config.task != "classification"):
    raise ValueError(f"config.maml.inner_optimizer={name!r} is implemented "
                     "for few-shot classification with Reptile only "
                     "(method=reptile); the other inner loops are SGD.")
  return reptile.inner_transform(name, b1)


def _classification(config, workdir):
  train_s, test_s = samplers(config)
  shape = train_s.x.shape[1:]
  backbone = models.backbone_from_config(config.model, shape,
                                         train_s.modality)
  method = config.method
  batches_from = lambda s: train_s.batches(  # noqa: E731
      config.meta_batch_size, start_step=s)
  model_state = {}
  if config.get("init_from") and method not in ("maml", "anil", "metasgd",
                                                "reptile"):
    raise ValueError(f"config.init_from is for maml, anil, metasgd and "
                     f"reptile (a Classifier whose backbone it loads); "
                     f"method {method!r} starts from its own init.")
  if method == "protonet":
    model = backbone
    params, model_state = models.init_variables(model, shape, config.seed)
    make_step = functools.partial(protonet.make_step, model,
                                  n_way=config.n_way)
    acc_fn = functools.partial(protonet.episode_accuracies, model=model,
                               n_way=config.n_way)
  elif method == "hypernet":
    model = hypernet.HyperNetLearner(backbone, n_way=config.n_way,
                                     hidden=config.hypernet.hidden,
                                     embed_dim=config.hypernet.embed_dim)
    ep = train_s.episode(0)
    params, model_state = models.init_variables(model, ep["support_x"],
                                jax.random.key(config.seed),
                                ep["support_y"], ep["query_x"])
    make_step = functools.partial(hypernet.make_step, model)
    acc_fn = functools.partial(hypernet.episode_accuracies, model=model)
  elif method in ("maml", "anil", "metasgd", "reptile"):
    m = config.maml
    maml.check_config("classification", m.inner_steps, m.inner_lr)
    head_init = m.get("head_init", "learned")
    maml.check_head_init(head_init)
    inner_tx = _inner_tx(config)
    model = models.Classifier(backbone, num_classes=config.n_way)
    params, model_state = models.init_variables(model, shape, config.seed)
    if config.get("init_from"):
      params, model_state = common.load_into(
          config.init_from, params, dont_load=("head/.*",),
          model_state=model_state)
      workdir_lib.say(f"backbone loaded from {config.init_from}")
    rules = tuple(tuple(r) for r in m.inner_rules) or None
    if method == "anil" and not rules:
      raise ValueError("anil adapts only the head: set config.maml."
                       "inner_rules (the anil config sets (('head/.*', 1.0),"
                       " ('.*', None))).")
    acc_fn = functools.partial(maml.episode_accuracies, model=model,
                               inner_lr=_test_lr(config),
                               inner_steps=m.test_inner_steps,
                               inner_rules=rules, inner_tx=inner_tx,
                               head_init=head_init)
    if method == "reptile":
      make_step = functools.partial(
          reptile.make_step, model, kind="classification",
          inner_lr=m.inner_lr, inner_steps=m.inner_steps, inner_rules=rules,
          train_on_query=m.get("train_on_query", False),
          inner_optimizer=m.get("inner_optimizer", "sgd"),
          inner_b1=m.get("inner_b1", 0.0), head_init=head_init)
    elif method == "metasgd":
      # Learned rates are tuned to inner_steps steps: test with as many.
      params = maml.init_metasgd(params, _test_lr(config))
      make_step = functools.partial(
          maml.make_step, model, kind="classification", metasgd=True,
          inner_steps=m.inner_steps, first_order=m.first_order,
          inner_rules=rules, head_init=head_init)
      acc_fn = functools.partial(maml.metasgd_episode_accuracies,
                                 model=model, inner_steps=m.inner_steps,
                                 inner_rules=rules, head_init=head_init)
    else:
      make_step = functools.partial(
          maml.make_step, model, kind="classification", inner_lr=m.inner_lr,
          inner_steps=m.inner_steps, first_order=m.first_order,
          inner_rules=rules, head_init=head_init)
  else:  # baseline: supervised pretraining on the meta-train classes.
    pre, classes = meta_train_data(config)
    # Labels 0..len(classes)-1 for the pretraining head.
    labels = np.searchsorted(np.asarray(sorted(classes)), pre.y)
    pre = dataclasses.replace(pre, y=labels.astype(np.int32),
                              num_classes=len(classes))
    model = models.Classifier(backbone, num_classes=len(classes))
    params, model_state = models.init_variables(model, shape, config.seed)
    make_step = functools.partial(supervised.make_step, model)
    acc_fn = functools.partial(protonet.episode_accuracies, model=model,
                               n_way=config.n_way, method="features")
    batches_from = common.batches_from(config, pre.arrays())

  acc_fn = jax.jit(acc_fn)

  def accuracy_of(state, num_episodes):
    # A BatchNorm backbone sees test episodes with its running statistics.
    kw = {"model_state": state.model_state} if model_state else {}
    return evaluation.episodes_accuracy(
        functools.partial(acc_fn, state.params, **kw), test_s, num_episodes)

  val_fn = lambda s: dict(zip(  # noqa: E731
      ("val_accuracy", "val_ci95"), accuracy_of(s, config.eval_episodes)))
  state, last = _fit(config, workdir, params, make_step, batches_from,
                     eval_fn=val_fn, model_state=model_state)
  acc, ci = accuracy_of(state, config.test_episodes)
  metrics = {"test_accuracy": acc, "test_ci95": ci,
             "test_episodes": config.test_episodes,
             "final_loss": last.get("loss", float("nan"))}
  return state, metrics


# A sinusoid task whose query MSE grew this many times over its MSE before
# fine-tuning counts as diverged (:func:`sinusoid_evaluate`).
DIVERGED_FACTOR = 100.0


def sinusoid_evaluate(params: PyTree, config, *, inner_lr: float | None = None,
                      num_tasks: int | None = None) -> dict[str, float]:
  """Query MSE (mean and 95% half-width over test tasks) after each number
  of plain SGD steps in ``config.eval_inner_steps``, at ``inner_lr``
  (default: the meta-training inner rate) on the config's test tasks.

  ``diverged_after_<k>`` counts the tasks SGD blew up on: MSE NaN, Inf, or
  above ``DIVERGED_FACTOR`` times the task's own MSE before any step (a
  finite 1e19 would swamp a mean over 600 tasks); the mean and interval
  are over the remaining tasks.
  """
  num_tasks = num_tasks or config.test_episodes
  batch = episodes.SinusoidTasks(seed=config.seed + 1000).batch(
      0, num_tasks, config.k_shot, config.test_n_query)
  model = sinusoid_model(config)
  lr = _test_lr(config) if inner_lr is None else float(inner_lr)
  curve = np.asarray(_sinusoid_curve(model, max(config.eval_inner_steps))(
      params, batch, jnp.float32(lr)))
  out = {}
  for k in config.eval_inner_steps:
    # Plain SGD can blow up on a task (the jointly pretrained model does at
    # rate 0.01 on a few large-amplitude ones): count those tasks and
    # average over the others, so neither number hides the other.
    ok = np.isfinite(curve[:, k]) & (curve[:, k]
                                     <= DIVERGED_FACTOR * curve[:, 0])
    out[f"diverged_after_{k}"] = int((~ok).sum())
    out[f"mse_after_{k}"], out[f"mse_after_{k}_ci95"] = (
        episodes.mean_ci95(curve[ok, k]) if ok.any()
        else (float("nan"), float("nan")))
  return out


def sinusoid_model(config) -> models.Classifier:
  """The one-output regressor of the sinusoid task."""
  return models.Classifier(models.backbone_from_config(config.model, (1,),
                                                       "vector"),
                           num_classes=1)


@functools.lru_cache(maxsize=8)
def _sinusoid_curve(model, steps: int):
  # The rate is an argument, not a constant, so other rates reuse the
  # compiled function.
  return jax.jit(lambda p, b, lr: maml.adaptation_curve(
      p, b, model=model, kind="regression", inner_lr=lr,
      inner_steps=steps)[0])


def _sinusoid(config, workdir):
  m = config.maml
  maml.check_config("regression", m.inner_steps, m.inner_lr)
  _inner_tx(config)   # SGD only here
  maml.check_head_init(m.get("head_init", "learned"), "regression")
  train_tasks = episodes.SinusoidTasks(seed=config.seed)
  model = sinusoid_model(config)
  params = models.init_params(model, (1,), config.seed)
  if config.method == "maml":
    make_step = functools.partial(
        maml.make_step, model, kind="regression", inner_lr=m.inner_lr,
        inner_steps=m.inner_steps, first_order=m.first_order)
  elif config.method == "reptile":
    make_step = functools.partial(
        reptile.make_step, model, kind="regression", inner_lr=m.inner_lr,
        inner_steps=m.inner_steps)
  else:
    make_step = functools.partial(maml.make_step, model, kind="regression",
                                  joint=True)
  val_fn = lambda s: {  # noqa: E731
      f"val_{k}": v for k, v in sinusoid_evaluate(
          s.params, config, num_tasks=min(100, config.test_episodes)).items()
      if not k.endswith("ci95")}
  batches_from = lambda s: train_tasks.batches(  # noqa: E731
      config.meta_batch_size, config.k_shot, config.n_query, start_step=s)
  state, last = _fit(config, workdir, params, make_step, batches_from,
                     eval_fn=val_fn)
  metrics = {"test_episodes": config.test_episodes,
             "final_loss": last.get("loss", float("nan"))}
  metrics.update(sinusoid_evaluate(state.params, config))
  return state, metrics


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Meta-trains ``config.method`` and evaluates it on held-out tasks.

  Writes ``metrics.jsonl``, checkpoints, ``params/`` and ``results.json``
  (``metrics``: ``test_accuracy`` and ``test_ci95`` for classification;
  ``mse_after_<k>`` and ``mse_after_<k>_ci95`` for sinusoids).
  """
  t0 = time.time()
  common.validate(config)
  if config.task == "classification":
    if config.method not in CLASSIFICATION_METHODS:
      raise ValueError(f"method {config.method!r} does not do few-shot "
                       f"classification; choose one of "
                       f"{CLASSIFICATION_METHODS}")
    state, metrics = _classification(config, workdir)
  elif config.task == "sinusoid":
    if config.method not in SINUSOID_METHODS:
      raise ValueError(f"method {config.method!r} does not do sinusoid "
                       f"regression; choose one of {SINUSOID_METHODS}")
    state, metrics = _sinusoid(config, workdir)
  else:
    raise ValueError(f"unknown task {config.task!r}; choose classification "
                     "or sinusoid")
  checkpoint.save_params(os.path.join(workdir, "params"), state.params,
                         state.model_state)
  return common.finish(workdir, metrics, config, t0)
