"""Reduction and classification metrics, pure functions of arrays.

Losses in :mod:`tljax.losses` return one value per example where the loss
is defined per example (as optax's losses do); :func:`weighted_mean` is the
one reducer that turns them into the scalar a step minimises, with optional
per-example weights (e.g. KMM importance weights) and exact under ``pmap``.

  >>> import jax.numpy as jnp
  >>> float(weighted_mean(jnp.array([1.0, 3.0]), jnp.array([3.0, 1.0])))
  1.5
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_mean(values: jax.Array, weights: jax.Array | None = None, *,
                  axis_name: str | None = None) -> jax.Array:
  """``mean(values)``, or ``sum(w * values) / sum(w)`` with ``weights``.

  Under ``pmap`` (``axis_name`` set) the result on each device is scaled so
  that the ``pmean`` :func:`tljax.train.train_step` applies to losses and
  gradients gives exactly the global-batch weighted mean: each device
  returns ``sum_d(w v) / (sum_all(w) / n_devices)``. Without weights, equal
  shards already make the mean of means the global mean.

  Args:
    values: ``(n,)`` per-example values (any shape; all entries count).
    weights: optional weights of the same shape, >= 0.
    axis_name: the ``pmap`` axis, if any.

  Returns:
    A scalar.

  Raises:
    ValueError: if ``weights`` does not have the shape of ``values``.
  """
  if weights is None:
    return jnp.mean(values)
  if jnp.shape(weights) != jnp.shape(values):
    raise ValueError(f"weights must have one entry per value, shape "
                     f"{jnp.shape(values)}; got {jnp.shape(weights)}.")
  num = jnp.sum(weights * values)
  den = jnp.sum(weights)
  if axis_name is not None:
    den = jax.lax.psum(den, axis_name) / jax.lax.psum(1.0, axis_name)
  return num / jnp.maximum(den, 1e-12)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose largest logit is at the label."""
  return jnp.mean(jnp.argmax(logits, -1) == labels)
