"""Tests of tljax.losses.alignment against numpy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.losses import alignment


def _np_mmd2(xs, xt, gammas, unbiased=False):
  """Gretton et al.'s estimator, written as explicit loops over pairs."""
  def k(a, b):
    return np.mean([np.exp(-g * np.sum((a - b) ** 2)) for g in gammas])
  ns, nt = len(xs), len(xt)
  if unbiased:
    sss = sum(k(xs[i], xs[j]) for i in range(ns) for j in range(ns)
              if i != j) / (ns * (ns - 1))
    stt = sum(k(xt[i], xt[j]) for i in range(nt) for j in range(nt)
              if i != j) / (nt * (nt - 1))
  else:
    sss = sum(k(a, b) for a in xs for b in xs) / ns ** 2
    stt = sum(k(a, b) for a in xt for b in xt) / nt ** 2
  sst = sum(k(a, b) for a in xs for b in xt) / (ns * nt)
  return sss + stt - 2 * sst


@pytest.mark.parametrize("gammas,unbiased", [
    ((0.5,), False), ((0.5,), True), ((0.1, 0.4, 2.0), False),
    ((0.1, 0.4, 2.0), True)])
def test_gaussian_mmd2_matches_numpy(gammas, unbiased):
  rng = np.random.default_rng(0)
  xs, xt = rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(5, 3))
  got = alignment.gaussian_mmd2(jnp.asarray(xs), jnp.asarray(xt),
                                gamma=gammas if len(gammas) > 1 else gammas[0],
                                unbiased=unbiased)
  np.testing.assert_allclose(got, _np_mmd2(xs, xt, gammas, unbiased),
                             rtol=1e-4, atol=1e-6)


def test_hand_computed_mmd():
  # all source at 0, all target at 1 (in 2-d): 1 + 1 - 2 exp(-gamma * 2).
  got = alignment.gaussian_mmd2(jnp.zeros((3, 2)), jnp.ones((4, 2)),
                                gamma=0.25)
  assert np.isclose(float(got), 2 - 2 * np.exp(-0.5), rtol=1e-6)


def test_multi_kernel_mmd_bandwidths_match_numpy():
  rng = np.random.default_rng(1)
  xs, xt = rng.normal(size=(6, 4)), rng.normal(1.0, 1.0, size=(6, 4))
  z = np.concatenate([xs, xt])
  d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
  sigma2 = d2.sum() / (12 * 12 - 12)
  gammas = [1 / (sigma2 * 2.0 ** p) for p in (-2, -1, 0, 1, 2)]
  got = alignment.multi_kernel_mmd2(jnp.asarray(xs), jnp.asarray(xt),
                                    num_kernels=5, kernel_mul=2.0)
  np.testing.assert_allclose(got, _np_mmd2(xs, xt, gammas), rtol=1e-4)


def test_mmd_identical_near_zero_shifted_positive():
  rng = np.random.default_rng(2)
  a = rng.normal(size=(200, 5)).astype(np.float32)
  b = rng.normal(size=(200, 5)).astype(np.float32)
  same = float(alignment.multi_kernel_mmd2(a, a))
  iid = float(alignment.multi_kernel_mmd2(a, b, unbiased=True))
  shifted = float(alignment.multi_kernel_mmd2(a, b + 1.0, unbiased=True))
  assert abs(same) < 1e-5
  assert abs(iid) < 0.01
  assert shifted > 0.1 > 10 * abs(iid)


def test_mmd_gradient_matches_finite_difference():
  rng = np.random.default_rng(3)
  xs = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)
  xt = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)
  f = lambda xs: alignment.gaussian_mmd2(xs, xt, gamma=(0.3, 1.0))
  g = jax.grad(f)(xs)
  eps = 1e-3
  e = jnp.zeros_like(xs).at[2, 1].set(eps)
  fd = (f(xs + e) - f(xs - e)) / (2 * eps)
  np.testing.assert_allclose(g[2, 1], fd, rtol=2e-2, atol=1e-4)


def test_coral_matches_numpy():
  rng = np.random.default_rng(4)
  xs, xt = rng.normal(size=(9, 4)), rng.normal(size=(6, 4)) * [1, 2, 3, 0.5]
  ref = np.sum((np.cov(xs, rowvar=False) - np.cov(xt, rowvar=False)) ** 2)
  ref /= 4 * 4 ** 2
  got = alignment.coral_loss(jnp.asarray(xs), jnp.asarray(xt))
  np.testing.assert_allclose(got, ref, rtol=1e-4)


def test_coral_zero_for_same_covariance_despite_mean_shift():
  rng = np.random.default_rng(5)
  xs = rng.normal(size=(10, 3)).astype(np.float32)
  assert float(alignment.coral_loss(xs, xs + 5.0)) < 1e-8
  assert float(alignment.coral_loss(xs, 3.0 * xs)) > 0.01


def test_domain_classification_loss_matches_numpy():
  ls = np.array([-2.0, 0.5, 1.0])
  lt = np.array([[0.3], [-1.0]])
  sig = lambda z: 1 / (1 + np.exp(-z))
  ref = 0.5 * (np.mean(-np.log(1 - sig(ls))) + np.mean(-np.log(sig(lt[:, 0]))))
  got = alignment.domain_classification_loss(jnp.asarray(ls), jnp.asarray(lt))
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  w = np.array([1.0, 0.0, 3.0])
  ref_w = 0.5 * (np.sum(w * -np.log(1 - sig(ls))) / 4 +
                 np.mean(-np.log(sig(lt[:, 0]))))
  got_w = alignment.domain_classification_loss(
      jnp.asarray(ls), jnp.asarray(lt), source_weights=jnp.asarray(w))
  np.testing.assert_allclose(got_w, ref_w, rtol=1e-5)
  # source correct for -2 only; target correct for 0.3 only -> (1/3 + 1/2)/2
  acc = alignment.domain_accuracy(jnp.asarray(ls), jnp.asarray(lt))
  assert np.isclose(float(acc), 0.5 * (1 / 3 + 1 / 2))


@pytest.mark.parametrize("fn", [
    lambda a, b: alignment.gaussian_mmd2(a, b, gamma=1.0),
    alignment.multi_kernel_mmd2, alignment.coral_loss])
def test_bad_inputs_raise_one_clear_error(fn):
  good = np.ones((4, 3), np.float32)
  with pytest.raises(ValueError, match="differ in shape"):
    fn(good, np.ones((4, 2), np.float32))
  with pytest.raises(ValueError, match="empty domain"):
    fn(good, np.ones((0, 3), np.float32))
  bad = good.copy()
  bad[1, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    fn(good, bad)
  # shape errors are raised at trace time under jit, not by XLA
  with pytest.raises(ValueError, match="differ in shape"):
    jax.jit(fn)(good, np.ones((4, 2), np.float32))
