"""Classification losses and metrics, pure functions of arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  weights: jax.Array | None = None) -> jax.Array:
  """Mean softmax cross-entropy with integer labels, optionally weighted.

  With ``weights`` (one per example, e.g. KMM importance weights) the result
  is ``sum(w * ce) / sum(w)``.
  """
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if weights is None:
    return ce.mean()
  return jnp.sum(weights * ce) / jnp.maximum(jnp.sum(weights), 1e-12)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits, -1) == labels)
