"""Small array operations shared by the methods: gradient reversal, pairwise
distances and kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def gradient_reversal(x, lam=1.0):
  """Identity on the forward pass; multiplies the gradient by ``-lam``.

  The gradient reversal layer of DANN (Ganin & Lempitsky, 2015, "Unsupervised
  Domain Adaptation by Backpropagation"): features pass unchanged to the
  domain classifier, and the feature extractor receives the negated domain
  gradient, so it learns features the classifier cannot separate. ``lam``
  receives no gradient.

    >>> import jax
    >>> jax.grad(lambda x: gradient_reversal(x, 0.5) * 3.0)(1.0)
    Array(-1.5, dtype=float32, weak_type=True)
  """
  del lam
  return x


def _gr_fwd(x, lam):
  return x, lam


def _gr_bwd(lam, g):
  return (jax.tree.map(lambda t: -lam * t, g), jnp.zeros_like(lam))


gradient_reversal.defvjp(_gr_fwd, _gr_bwd)


def pairwise_sq_distances(a: jax.Array, b: jax.Array | None = None
                          ) -> jax.Array:
  """``d[i, j] = ||a_i - b_j||^2`` for ``a: (n, d)``, ``b: (m, d)``; >= 0."""
  b = a if b is None else b
  sq = (jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :]
        - 2.0 * a @ b.T)
  return jnp.maximum(sq, 0.0)


def pairwise_distances(a: jax.Array, b: jax.Array | None = None, *,
                       kind: str = "l2", eps: float = 1e-12) -> jax.Array:
  """Pairwise distances of rows: ``l2``, ``squared_l2`` or ``cosine``.

  ``l2`` has a finite (zero) gradient where two points coincide; ``cosine`` is
  ``1 - cos(a_i, b_j)``.
  """
  if kind == "squared_l2":
    return pairwise_sq_distances(a, b)
  if kind == "l2":
    sq = pairwise_sq_distances(a, b)
    safe = jnp.where(sq > eps, sq, 1.0)
    return jnp.where(sq > eps, jnp.sqrt(safe), 0.0)
  if kind == "cosine":
    b = a if b is None else b
    an = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), eps)
    bn = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), eps)
    return 1.0 - an @ bn.T
  raise ValueError(f"unknown distance {kind!r}; choose l2, squared_l2 or "
                   "cosine")


def gaussian_kernel(a: jax.Array, b: jax.Array | None = None, *,
                    gamma: float | jax.Array = 1.0) -> jax.Array:
  """``k(x, y) = exp(-gamma ||x - y||^2)``."""
  return jnp.exp(-gamma * pairwise_sq_distances(a, b))
