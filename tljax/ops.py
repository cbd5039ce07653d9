"""Small array operations shared by the methods: gradient reversal, pairwise
distances and kernels.
"""

from __future__ import annotations

import functools
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


def _channels_last(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count) -> bool:
  """Whether :func:`conv` covers this convolution (NHWC-style, HWIO-style
  kernel, undilated, ungrouped)."""
  nd = rhs.ndim - 2
  if nd < 1 or feature_group_count != 1 or dimension_numbers is None:
    return False
  if any(d != 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ())):
    return False
  spatial = "HWD"[:nd] if nd <= 3 else None
  if spatial is None:
    return False
  want = jax.lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, ("N" + spatial + "C", spatial + "IO",
                             "N" + spatial + "C"))
  return jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                        dimension_numbers) == want


def _lax_conv(x, k, strides, pads):
  nd = k.ndim - 2
  spatial = "HWD"[:nd]
  return jax.lax.conv_general_dilated(
      x, k, strides, pads, dimension_numbers=("N" + spatial + "C",
                                              spatial + "IO",
                                              "N" + spatial + "C"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, k, strides, pads):
  return _lax_conv(x, k, strides, pads)


def _conv_fwd(x, k, strides, pads):
  return _lax_conv(x, k, strides, pads), (x, k)


def _conv_bwd(strides, pads, res, g):
  x, k = res
  # The input gradient is XLA's own (a transposed convolution; unused, and
  # removed by XLA, where the input needs none).
  dx, = jax.vjp(lambda x: _lax_conv(x, k, strides, pads), x)[1](g)
  # The kernel gradient as one matmul per kernel offset: the strided input
  # window under that offset, (batch * out positions, cin)^T times the
  # output gradient, (batch * out positions, cout).
  xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  out = g.shape[1:-1]
  g2 = g.reshape(-1, g.shape[-1])
  taps = []
  for offset in itertools.product(*(range(n) for n in k.shape[:-2])):
    limit = (xp.shape[0], *(o + (n - 1) * s + 1
                            for o, n, s in zip(offset, out, strides)),
             xp.shape[-1])
    window = jax.lax.slice(xp, (0, *offset, 0), limit, (1, *strides, 1))
    taps.append(window.reshape(-1, x.shape[-1]).T @ g2)
  return dx, jnp.stack(taps).reshape(k.shape).astype(k.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
         precision=None, preferred_element_type=None):
  """``jax.lax.conv_general_dilated`` with a faster kernel gradient on the
  CPU.

  The forward pass and the input gradient are XLA's own convolution; the
  gradient in the kernel, which XLA:CPU computes several times slower than
  a matmul of the same FLOPs (``benchmarks/conv_kernels.py``), is one
  matmul per kernel offset (strided window of the padded input, transposed,
  times the output gradient), the same sum in another order. Channels-last
  (``NHWC`` / ``HWIO``-style), undilated, ungrouped convolutions in 1-3
  spatial dimensions take this path on the CPU; everything else, and
  every other backend, is ``lax.conv_general_dilated`` itself. The
  signature is lax's, so it plugs into ``flax.linen.Conv(...,
  conv_general_dilated=conv)``.

    >>> import numpy as np
    >>> x, k = np.ones((1, 5, 5, 2), np.float32), np.ones((3, 3, 2, 4), np.float32)
    >>> float(conv(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))[0, 2, 2, 0])
    18.0
  """
  if (jax.default_backend() != "cpu" or precision is not None
      or preferred_element_type is not None
      or not _channels_last(lhs, rhs, lhs_dilation, rhs_dilation,
                            dimension_numbers, feature_group_count)
      or rhs.shape[-2] < 4):
    # With 1-3 input channels XLA's own kernel gradient was faster
    # (measured at 1 channel, 256 x 28 x 28: 17 ms against 28 ms).
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2],
                                      strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding,
                                        dimension_numbers=dimension_numbers)
  return _conv(lhs, rhs, strides, pads)


def max_pool_2x2(x):
  """2x2 max pooling with stride 2 on NHWC ``x`` (odd sizes floored, as
  ``flax.linen.max_pool(x, (2, 2), strides=(2, 2))``), as a reshape and a
  max: the same values, and on the CPU a faster backward pass than
  ``reduce_window``'s select-and-scatter."""
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
