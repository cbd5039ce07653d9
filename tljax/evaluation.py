"""Prediction and evaluation of trained models: numbers, no files.

  >>> import jax, numpy as np
  >>> from tljax import data, models
  >>> model = models.Classifier(models.MLP((8,)), num_classes=2)
  >>> params = models.init_params(model, (2,), 0)
  >>> predict(model, params, np.zeros((3, 2), np.float32)).shape
  (3, 2)
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tljax.data import batching
from tljax.data import episodes
from tljax.data.sources import Dataset

PyTree = Any


@functools.partial(jax.jit, static_argnames=("model", "method"))
def _apply(model, variables, x, method=None):
  # Inference: a model with BatchNorm normalises with its running
  # statistics (its ``train`` argument defaults to False).
  return model.apply(variables, x, method=method)


def predict(model: nn.Module, params: PyTree, x: np.ndarray, *,
            model_state: PyTree | None = None, batch_size: int = 512,
            method: str | Callable | None = None) -> np.ndarray:
  """``model.apply`` over ``x`` in fixed-size batches (one compilation).

  Args:
    model: a linen module.
    params: its parameters.
    x: inputs, examples first.
    model_state: its other collections (BatchNorm statistics), if any.
    batch_size: examples per call (the last batch is padded).
    method: the module method to apply (e.g. ``'features'``); default
      ``__call__``.

  Returns:
    The outputs for every example of ``x``, as a numpy array.
  """
  variables = {"params": params, **(model_state or {})}
  outs = []
  for batch, n in batching.eval_batches({"x": x}, batch_size):
    outs.append(np.asarray(_apply(model, variables, batch["x"], method))[:n])
  return np.concatenate(outs)


def evaluate(model: nn.Module, params: PyTree, dataset: Dataset, *,
             model_state: PyTree | None = None,
             batch_size: int = 512) -> dict[str, float]:
  """Accuracy and mean cross-entropy of a classifier on a labelled set."""
  dataset.require_labels()
  logits = predict(model, params, dataset.x, model_state=model_state,
                   batch_size=batch_size)
  y = dataset.y
  logp = jax.nn.log_softmax(jnp.asarray(logits))
  loss = -float(jnp.mean(jnp.take_along_axis(logp, y[:, None], -1)))
  return {"accuracy": float(np.mean(logits.argmax(-1) == y)), "loss": loss}


def accuracy(model: nn.Module, params: PyTree, dataset: Dataset, *,
             model_state: PyTree | None = None) -> float:
  """Accuracy of a classifier on a labelled data set."""
  return evaluate(model, params, dataset, model_state=model_state)[
      "accuracy"]


def episodes_accuracy(accuracy_fn: Callable[[dict], jax.Array], sampler,
                      num_episodes: int, *, batch_size: int = 50
                      ) -> tuple[float, float]:
  """Mean per-episode accuracy and its 95% half-width over the first
  ``num_episodes`` episodes of ``sampler`` (a
  :class:`tljax.data.episodes.EpisodeSampler`; the same episodes for every
  method).

  Args:
    accuracy_fn: ``accuracy_fn(meta_batch) -> (tasks,)`` accuracies (jit it;
      e.g. a partial of a meta-learner's ``episode_accuracies``).
    sampler: the test episodes.
    num_episodes: how many to average.
    batch_size: episodes per call (whole batches keep one compiled shape;
      episodes past ``num_episodes`` are dropped).
  """
  if num_episodes < 1:
    raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
  batch_size = min(batch_size, num_episodes)
  accs = []
  for start in range(0, num_episodes, batch_size):
    accs.append(np.asarray(accuracy_fn(sampler.batch(start // batch_size,
                                                     batch_size))))
  return episodes.mean_ci95(np.concatenate(accs)[:num_episodes])
