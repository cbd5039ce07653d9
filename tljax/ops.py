"""Small array operations shared by the methods: gradient reversal, pairwise
distances and kernels.
"""

from __future__ import annotations

import itertools

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


def _channels_last_conv(lhs, rhs, window_strides, padding, lhs_dilation,
                        rhs_dilation, dimension_numbers, feature_group_count):
  """Whether :func:`conv` may run this convolution as one matmul."""
  nd = rhs.ndim - 2
  if nd < 1 or feature_group_count != 1:
    return False
  if any(d != 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ())):
    return False
  spec = jax.lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, ("N" + "HWD"[:nd] + "C", "HWD"[:nd] + "IO",
                             "N" + "HWD"[:nd] + "C"))
  given = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                         dimension_numbers)
  if given != spec:
    return False
  return isinstance(padding, str) or all(lo >= 0 and hi >= 0
                                         for lo, hi in padding)


def conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
         precision=None, preferred_element_type=None):
  """``jax.lax.conv_general_dilated`` that XLA:CPU runs fast.

  On the CPU, XLA's convolution backward passes are several times slower
  than a matrix product of the same FLOPs; this runs a channels-last,
  undilated, ungrouped convolution as im2col (``prod(kernel)`` strided
  slices of the padded input, concatenated on the channel axis) times the
  reshaped kernel, whose forward and backward passes are all matmuls. The
  result is the same convolution (to float rounding). On other backends,
  and for layouts or options it does not cover, it is
  ``lax.conv_general_dilated`` itself. The signature is lax's, so it plugs
  into ``flax.linen.Conv(..., conv_general_dilated=conv)``.

    >>> import numpy as np
    >>> x, k = np.ones((1, 5, 5, 2), np.float32), np.ones((3, 3, 2, 4), np.float32)
    >>> float(conv(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))[0, 2, 2, 0])
    18.0
  """
  args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
          dimension_numbers, feature_group_count)
  if (jax.default_backend() != "cpu" or dimension_numbers is None
      or not _channels_last_conv(*args)):
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  kernel = rhs.shape[:-2]
  strides = tuple(window_strides)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:-1], kernel, strides,
                                      padding)
  x = jnp.pad(lhs, [(0, 0), *[tuple(p) for p in padding], (0, 0)])
  out = [(x.shape[1 + i] - k) // s + 1
         for i, (k, s) in enumerate(zip(kernel, strides))]
  cols = []
  for offset in itertools.product(*(range(k) for k in kernel)):
    start = (0, *offset, 0)
    limit = (x.shape[0], *(o + (n - 1) * s + 1
                           for o, n, s in zip(offset, out, strides)),
             x.shape[-1])
    cols.append(jax.lax.slice(x, start, limit, (1, *strides, 1)))
  cols = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
  return jnp.matmul(cols, rhs.reshape(-1, rhs.shape[-1]), precision=precision,
                    preferred_element_type=preferred_element_type)


def max_pool_2x2(x):
  """2x2 max pooling with stride 2 on NHWC ``x`` (odd sizes floored, as
  ``flax.linen.max_pool(x, (2, 2), strides=(2, 2))``), as a reshape and a
  max: the same values, and on the CPU a faster backward pass than
  ``reduce_window``'s select-and-scatter."""
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
