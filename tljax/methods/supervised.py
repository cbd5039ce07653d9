"""Supervised classification: the loss every transfer method starts from,
evaluation, and the train-on-one-domain / load-into-another experiment.

    # Train a source model, evaluate on source and target, save params.
    python experiments/train.py --workdir=/tmp/src
    # Load it (all but the head) into a new model and train on the target.
    python experiments/train.py --workdir=/tmp/tgt --config.train_on=target \
        --config.init_from=/tmp/src
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tljax import data as data_lib
from tljax import losses
from tljax import models
from tljax import optim
from tljax import params as params_lib
from tljax import viz
from tljax.train import checkpoint
from tljax.train import loop
from tljax.train import state as state_lib

PyTree = Any


def classification_loss(params, state, batch, rng, *, model: nn.Module,
                        axis_name=None):
  """Cross-entropy on ``batch['x']``/``batch['y']`` (weighted by
  ``batch['w']`` if present); metrics: ``accuracy``."""
  del state, rng, axis_name
  logits = model.apply({"params": params}, batch["x"], train=True)
  loss = losses.cross_entropy(logits, batch["y"], batch.get("w"))
  return loss, {"accuracy": losses.accuracy(logits, batch["y"])}


@functools.partial(jax.jit, static_argnames=("model", "method"))
def _apply(model, params, x, method=None):
  return model.apply({"params": params}, x, method=method)


def predict(model: nn.Module, params: PyTree, x: np.ndarray, *,
            batch_size: int = 512, method: str | None = None) -> np.ndarray:
  """``model.apply`` over ``x`` in fixed-size batches (one compile)."""
  outs = []
  for batch, n in data_lib.eval_batches({"x": x}, batch_size):
    outs.append(np.asarray(_apply(model, params, batch["x"], method))[:n])
  return np.concatenate(outs)


def evaluate(model: nn.Module, params: PyTree, dataset: data_lib.Dataset, *,
             batch_size: int = 512) -> dict[str, float]:
  """Accuracy and mean cross-entropy of ``model`` on a labelled data set."""
  dataset.require_labels()
  logits = predict(model, params, dataset.x, batch_size=batch_size)
  y = dataset.y
  logp = jax.nn.log_softmax(jnp.asarray(logits))
  loss = -float(jnp.mean(jnp.take_along_axis(logp, y[:, None], -1)))
  return {"accuracy": float(np.mean(logits.argmax(-1) == y)), "loss": loss}


# Kept here too: every method module reaches for it beside build_model.
init_params = models.init_params


def build_model(config, num_classes: int, example_shape) -> nn.Module:
  """The classifier named by ``config.model`` (``auto`` picks by input)."""
  return models.build_classifier(config.model, num_classes, example_shape)


def _load(spec, split, config, **kw):
  return data_lib.load(spec, split, seed=config.seed,
                       data_dir=config.get("data_dir") or None, **kw)


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains a classifier on ``config.train_on`` and evaluates on both domains.

  Writes ``metrics.jsonl``, checkpoints, ``params/`` (for a later
  ``init_from``) and ``results.json`` (``metrics``: ``source_accuracy``,
  ``target_accuracy``, ``train_accuracy``, ...) in ``workdir``.
  """
  t0 = time.time()
  if config.train_on not in ("source", "target"):
    raise ValueError(f"train_on must be 'source' or 'target', got "
                     f"{config.train_on!r}")
  budget = config.labels_per_class if config.labels_per_class > 0 else None
  train_spec = config.source if config.train_on == "source" else config.target
  train = _load(train_spec, "train", config, labels_per_class=budget)
  train.require_labels()
  num_classes = train.num_classes
  evals = {}
  for domain in ("source", "target"):
    spec = config[domain]
    if not spec:
      continue
    ds = _load(spec, "test", config)
    if ds.example_shape != train.example_shape:
      raise ValueError(
          f"{domain} data {spec!r} has examples of shape {ds.example_shape} "
          f"but the training data {train_spec!r} has {train.example_shape}; "
          "both domains must share one input shape.")
    if ds.y is not None and ds.num_classes == num_classes:
      evals[domain] = ds
  model = build_model(config, num_classes, train.example_shape)
  params = init_params(model, train.example_shape, config.seed)
  if config.init_from:
    loaded = checkpoint.load_params(config.init_from)
    params = params_lib.merge_params(loaded, params,
                                     dont_load=tuple(config.dont_load))
    loop.say(f"loaded parameters from {config.init_from} "
             f"(dont_load={tuple(config.dont_load)})")
  tx = optim.from_config(params, config.optim, total_steps=config.num_steps)
  if config.optim.lr_rules:
    loop.say("lr_rules (None = frozen):\n" + params_lib.describe_rules(
        params, [tuple(r) for r in config.optim.lr_rules], what="lr_rules"))
  state = state_lib.create_train_state(params, tx)
  step = functools.partial(
      state_lib.train_step,
      loss_fn=functools.partial(classification_loss, model=model), tx=tx)
  eval_set = evals.get(config.train_on)
  eval_fn = ((lambda p: evaluate(model, p, eval_set)) if eval_set is not None
             else None)
  state, last = loop.fit_with_config(
      state, step,
      lambda start: data_lib.batches(train.arrays(), config.batch_size,
                                     seed=config.seed, start_step=start),
      config, workdir=workdir, eval_fn=eval_fn)
  metrics = {"train_examples": len(train),
             "train_accuracy": evaluate(model, state.params, train)[
                 "accuracy"],
             "final_loss": last.get("loss", float("nan"))}
  for domain, ds in evals.items():
    metrics[f"{domain}_accuracy"] = evaluate(model, state.params, ds)[
        "accuracy"]
  metrics["wall_seconds"] = time.time() - t0
  # Every process calls orbax; it writes from the primary one.
  checkpoint.save_params(os.path.join(workdir, "params"), state.params)
  loop.write_results(workdir, metrics, config)
  if loop.is_chief():
    viz.plot_training_curves(workdir)
  loop.say("results: " + "  ".join(
      f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
      for k, v in metrics.items()))
  return metrics
