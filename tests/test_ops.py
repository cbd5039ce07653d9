"""Tests of tljax.ops against independent calculations (numpy, closed form)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import ops


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_gradient_reversal_is_minus_lam_times_grad(lam):
  x = jnp.array([0.1, -1.2, 2.0, 0.7])
  c = jnp.array([1.0, 2.0, -3.0, 0.5])
  f_plain = lambda x: jnp.sum(c * jnp.sin(x))
  f_rev = lambda x: jnp.sum(c * jnp.sin(ops.gradient_reversal(x, lam)))
  # forward: identity
  np.testing.assert_allclose(f_rev(x), f_plain(x), rtol=1e-6)
  # backward: -lam times the analytic gradient c * cos(x)
  expected = -lam * np.asarray(c) * np.cos(np.asarray(x))
  np.testing.assert_allclose(jax.grad(f_rev)(x), expected, rtol=1e-5,
                             atol=1e-7)


def test_gradient_reversal_traced_lam_under_jit_and_no_grad_for_lam():
  x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  f = lambda x, lam: jnp.sum(ops.gradient_reversal(x, lam) ** 2)
  gx, glam = jax.jit(jax.grad(f, argnums=(0, 1)))(x, jnp.float32(0.5))
  np.testing.assert_allclose(gx, -0.5 * 2 * np.asarray(x), rtol=1e-6)
  assert float(glam) == 0.0


def test_gradient_reversal_only_flips_the_branch_it_sits_on():
  # y = x * 3 (plain) + gr(x) * 2: dy/dx = 3 - lam * 2
  lam = 0.75
  f = lambda x: 3.0 * x + 2.0 * ops.gradient_reversal(x, lam)
  assert np.isclose(float(jax.grad(f)(1.3)), 3.0 - 2.0 * lam)


def _np_sq(a, b):
  return np.array([[np.sum((ai - bj) ** 2) for bj in b] for ai in a])


def test_pairwise_sq_distances_matches_numpy():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
  np.testing.assert_allclose(
      ops.pairwise_sq_distances(jnp.asarray(a), jnp.asarray(b)),
      _np_sq(a, b), rtol=1e-5, atol=1e-5)
  d = ops.pairwise_sq_distances(jnp.asarray(a))
  np.testing.assert_allclose(d, _np_sq(a, a), rtol=1e-5, atol=1e-5)
  assert float(jnp.min(d)) >= 0.0


@pytest.mark.parametrize("kind", ["l2", "squared_l2", "cosine"])
def test_pairwise_distances_kinds_match_numpy(kind):
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(6, 4)), rng.normal(size=(3, 4))
  if kind == "l2":
    ref = np.sqrt(_np_sq(a, b))
  elif kind == "squared_l2":
    ref = _np_sq(a, b)
  else:
    ref = np.array([[1 - ai @ bj / np.linalg.norm(ai) / np.linalg.norm(bj)
                     for bj in b] for ai in a])
  got = ops.pairwise_distances(jnp.asarray(a), jnp.asarray(b), kind=kind)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_l2_distance_has_finite_gradient_at_coincident_points():
  a = jnp.array([[1.0, 2.0], [1.0, 2.0]])
  g = jax.grad(lambda a: jnp.sum(ops.pairwise_distances(a)))(a)
  assert np.all(np.isfinite(g))


def test_gaussian_kernel_matches_numpy():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(4, 2)), rng.normal(size=(5, 2))
  np.testing.assert_allclose(
      ops.gaussian_kernel(jnp.asarray(a), jnp.asarray(b), gamma=0.7),
      np.exp(-0.7 * _np_sq(a, b)), rtol=1e-5, atol=1e-6)


def test_unknown_distance_kind_raises():
  with pytest.raises(ValueError, match="unknown distance"):
    ops.pairwise_distances(jnp.ones((2, 2)), kind="manhattan")


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((2, 7, 3), (5,), (2,), "SAME"),
    ((2, 9, 2), (3,), (1,), "VALID"),
    ((2, 6, 5, 1), (3, 3), (1, 1), "SAME"),
    ((1, 9, 8, 3), (5, 5), (2, 2), ((2, 1), (2, 2))),
    ((2, 5, 5, 4), (1, 1), (2, 2), "VALID"),
    ((2, 6, 7, 2), (3, 3), (2, 2), "SAME"),
    ((1, 4, 5, 3, 2), (2, 3, 2), (1, 2, 1), "SAME"),
])
def test_conv_and_its_gradients_are_the_convolution(shape, kernel, strides,
                                                    padding):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  k = rng.normal(size=(*kernel, shape[-1], 3)).astype(np.float32)
  nd = len(kernel)
  dims = ("N" + "HWD"[:nd] + "C", "HWD"[:nd] + "IO", "N" + "HWD"[:nd] + "C")
  pads = (jax.lax.padtype_to_pads(shape[1:-1], kernel, strides, padding)
          if isinstance(padding, str) else padding)
  out = jax.jit(lambda x, k: ops.conv(x, k, strides, padding,
                                      dimension_numbers=dims))(x, k)
  # Forward and kernel gradient against direct float64 loops over the
  # output positions: out[b, o, f] = sum_{window, c} x * k, and
  # dL/dk[window, c, f] = sum_{b, o} x[b, o * s + window, c] w[b, o, f].
  xp = np.pad(x.astype(np.float64), [(0, 0), *pads, (0, 0)])
  w = rng.normal(size=out.shape)
  want, want_dk = np.zeros(out.shape), np.zeros(k.shape)
  for o in np.ndindex(*out.shape[1:-1]):
    window = tuple(slice(o[i] * strides[i], o[i] * strides[i] + kernel[i])
                   for i in range(nd))
    patch = xp[(slice(None), *window)]                     # (b, *k, c)
    want[(slice(None), *o)] = np.tensordot(
        patch, k, axes=(list(range(1, nd + 2)), list(range(nd + 1))))
    want_dk += np.tensordot(patch, w[(slice(None), *o)], axes=(0, 0))
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
  loss = lambda conv: lambda x, k: jnp.sum(w * conv(  # noqa: E731
      x, k, strides, padding, dimension_numbers=dims))
  dx, dk = jax.jit(jax.grad(loss(ops.conv), argnums=(0, 1)))(x, k)
  np.testing.assert_allclose(dk, want_dk, rtol=1e-4, atol=1e-4)
  lax_dx, _ = jax.grad(loss(jax.lax.conv_general_dilated), argnums=(0, 1))(
      x, k)
  np.testing.assert_allclose(dx, lax_dx, rtol=1e-5, atol=1e-5)


def test_conv_leaves_what_it_does_not_cover_to_xla():
  x = np.ones((1, 6, 6, 4), np.float32)
  k = np.ones((3, 3, 2, 4), np.float32)     # two feature groups
  args = ((1, 1), "SAME")
  kw = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2)
  np.testing.assert_allclose(ops.conv(x, k, *args, **kw),
                             jax.lax.conv_general_dilated(x, k, *args, **kw))
  kw = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"), rhs_dilation=(2, 2))
  k = np.ones((3, 3, 4, 2), np.float32)
  np.testing.assert_allclose(ops.conv(x, k, *args, **kw),
                             jax.lax.conv_general_dilated(x, k, *args, **kw))


@pytest.mark.parametrize("hw", [(4, 6), (7, 5), (2, 2)])
def test_max_pool_2x2_matches_numpy(hw):
  x = np.random.default_rng(1).normal(size=(2, *hw, 3)).astype(np.float32)
  h, w = hw[0] // 2, hw[1] // 2
  expected = np.empty((2, h, w, 3), np.float32)
  for i in range(h):
    for j in range(w):
      expected[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(1, 2))
  np.testing.assert_array_equal(ops.max_pool_2x2(x), expected)
