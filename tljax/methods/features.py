"""Feature extraction with cached features: a linear probe on a frozen
backbone.

The classic recipe for small target sets (Donahue et al., 2014, "DeCAF";
Razavian et al., 2014, "CNN Features off-the-shelf"): run the pretrained,
frozen backbone once over the data, keep its outputs, and train only a new
head on them. Since the backbone never changes, the head sees exactly the
features it would see through the backbone, so training on the cache gives
the same head (tested) at a fraction of the cost (``benchmarks/
cached_features.py``). Keeping the features on disk between runs (keyed by
a fingerprint of the parameters and the examples) is the drivers' job
(:func:`tljax.drivers.common.feature_cache`).

  >>> import jax, jax.numpy as jnp, numpy as np
  >>> from tljax import models
  >>> model = models.Classifier(models.MLP((16,)), num_classes=3)
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4)))['params']
  >>> x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
  >>> cache = FeatureCache.build(model, params, x)
  >>> cache.lookup(x[3:5]).shape
  (2, 16)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import numpy as np
import optax

from tljax import evaluation
from tljax import losses
from tljax.train import state as state_lib

PyTree = Any


def extract_features(model: nn.Module, params: PyTree, x: np.ndarray, *,
                     batch_size: int = 512,
                     model_state: PyTree | None = None) -> np.ndarray:
  """The backbone's outputs ``model.features(x)`` for all of ``x``."""
  x = np.asarray(x)
  if x.ndim < 2 or len(x) == 0:
    raise ValueError(f"extract_features needs a non-empty batch of examples "
                     f"with the example axis first; got shape {x.shape}")
  return evaluation.predict(model, params, x, batch_size=batch_size,
                            model_state=model_state, method="features")


class FeatureCache:
  """Backbone features of a set of examples, looked up by example content.

  Rows are found by the bytes of each example, so any subset of the cached
  examples (e.g. a label budget drawn by :func:`tljax.data.load`) maps to
  its features without knowing its indices; equal examples have equal
  features, so duplicates are harmless.
  """

  def __init__(self, x: np.ndarray, features: np.ndarray):
    if len(x) != len(features):
      raise ValueError(f"{len(x)} examples but {len(features)} feature rows")
    self.features = np.asarray(features)
    self._row = {}
    for i, ex in enumerate(np.ascontiguousarray(x, dtype=np.float32)):
      self._row.setdefault(ex.tobytes(), i)
    self.example_shape = tuple(np.shape(x)[1:])

  @classmethod
  def build(cls, model: nn.Module, params: PyTree, x: np.ndarray, *,
            batch_size: int = 512, model_state: PyTree | None = None
            ) -> "FeatureCache":
    """Runs the backbone once over ``x`` (:func:`extract_features`)."""
    x = np.asarray(x, np.float32)
    return cls(x, extract_features(model, params, x, batch_size=batch_size,
                                   model_state=model_state))

  def lookup(self, x: np.ndarray) -> np.ndarray:
    """Features of examples that were cached; raises on unknown ones."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if tuple(x.shape[1:]) != self.example_shape:
      raise ValueError(f"examples of shape {tuple(x.shape[1:])} do not match "
                       f"the cached ones {self.example_shape}")
    rows = [self._row.get(ex.tobytes(), -1) for ex in x]
    missing = sum(r < 0 for r in rows)
    if missing:
      raise ValueError(f"{missing} of {len(x)} examples are not in the "
                       "feature cache; build the cache over a set that "
                       "contains them.")
    return self.features[np.asarray(rows, np.int64)]


def head_params(params: PyTree) -> PyTree:
  """The part of a classifier's parameters a linear probe trains."""
  return {"head": params["head"]}


def head_loss(params, state, batch, rng, *, model: nn.Module, axis_name=None):
  """Cross-entropy of ``model``'s head on cached ``batch['features']``.

  ``params`` is ``{'head': ...}`` (:func:`head_params`); the result equals
  :func:`tljax.methods.supervised.classification_loss` on the inputs the
  features came from. Metrics: ``accuracy``.
  """
  del state, rng
  logits = model.apply({"params": params}, batch["features"],
                       method="logits_from_features")
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
  loss = losses.weighted_mean(ce, batch.get("w"), axis_name=axis_name)
  return loss, {"accuracy": losses.accuracy(logits, batch["y"])}


def head_accuracy(model: nn.Module, params: PyTree, features: np.ndarray,
                  y: np.ndarray) -> float:
  """Accuracy of the head ``params['head']`` on cached features."""
  logits = evaluation.predict(model, head_params(params), features,
                              method="logits_from_features")
  return float(np.mean(logits.argmax(-1) == np.asarray(y)))


def make_step(model: nn.Module, tx: optax.GradientTransformation):
  """The step of :func:`head_loss`: trains ``{'head': ...}`` on cached
  features."""
  return state_lib.loss_step(head_loss, tx, model=model)
