"""Transferability scores against independent numpy implementations of each
paper's formula (float64, loops where that is clearer), their invariances,
the ranking judges on hand-computed values, and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tljax.methods import transferability as tr


# ------------------------------------------------- reference formulas
def _ref_leep(theta, y):
  """Nguyen et al. (2020), eqs. 1-2, one sum at a time."""
  n, nz = theta.shape
  classes = sorted(set(y.tolist()))
  joint = {(a, z): sum(theta[i, z] for i in range(n) if y[i] == a) / n
           for a in classes for z in range(nz)}
  p_z = [sum(joint[a, z] for a in classes) for z in range(nz)]
  total = 0.0
  for i in range(n):
    total += math.log(sum(joint[y[i], z] / p_z[z] * theta[i, z]
                          for z in range(nz) if p_z[z] > 0))
  return total / n


def _ref_nce(z, y):
  """Tran et al. (2019): -H(Y | Z) from counts."""
  n = len(z)
  h = 0.0
  for zz in set(z.tolist()):
    nz = np.sum(z == zz)
    for yy in set(y.tolist()):
      nzy = np.sum((z == zz) & (y == yy))
      if nzy:
        h -= nzy / n * math.log(nzy / nz)
  return -h


def _ref_h_score(f, y):
  """Bao et al. (2019): tr(cov(f)^-1 cov(E[f|y])) with np.cov."""
  g = np.zeros_like(f)
  for c in set(y.tolist()):
    g[y == c] = f[y == c].mean(0)
  return np.trace(np.linalg.pinv(np.cov(f, rowvar=False))
                  @ np.cov(g, rowvar=False))


def _ref_log_me(f, y, iters=10000):
  """You et al. (2021), Algorithm 1 with the d x d matrices themselves."""
  n, d = f.shape
  ftf = f.T @ f
  lam = np.linalg.eigvalsh(ftf)
  out = []
  for c in sorted(set(y.tolist())):
    t = (y == c).astype(np.float64)
    alpha, beta = 1.0, 1.0
    for _ in range(iters):
      a = alpha * np.eye(d) + beta * ftf
      m = beta * np.linalg.solve(a, f.T @ t)
      gamma = np.sum(beta * lam / (alpha + beta * lam))
      new_alpha = gamma / (m @ m)
      new_beta = (n - gamma) / np.sum((f @ m - t) ** 2)
      done = abs(new_alpha / new_beta - alpha / beta) < 1e-12 * alpha / beta
      alpha, beta = new_alpha, new_beta
      if done:
        break
    a = alpha * np.eye(d) + beta * ftf
    m = beta * np.linalg.solve(a, f.T @ t)
    evidence = (n / 2 * np.log(beta) + d / 2 * np.log(alpha)
                - n / 2 * np.log(2 * np.pi)
                - beta / 2 * np.sum((f @ m - t) ** 2) - alpha / 2 * m @ m
                - np.linalg.slogdet(a)[1] / 2)
    out.append(evidence / n)
  return float(np.mean(out))


def _ref_transrate(f, y, eps):
  """Huang et al. (2022), the appendix's coding rates, one class at a time."""
  z = f - f.mean(0)

  def rate(zz):
    m, d = zz.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + zz.T @ zz / (m * eps))[1]
  classes = sorted(set(y.tolist()))
  return rate(z) - sum(rate(z[y == c]) for c in classes) / len(classes)


def _inputs(seed, n, d, c, nz=4):
  rng = np.random.default_rng(seed)
  y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
  f = rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(c, d))[y]
  logits = rng.normal(size=(n, nz)) + 2 * np.eye(nz)[y % nz]
  theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  return f, theta, y


CASES = [(0, 40, 5, 3), (1, 30, 8, 4), (2, 12, 20, 3), (3, 60, 3, 2)]


@pytest.mark.parametrize("seed,n,d,c", CASES)
def test_leep_matches_formula(seed, n, d, c):
  _, theta, y = _inputs(seed, n, d, c)
  np.testing.assert_allclose(tr.leep(theta, y), _ref_leep(theta, y),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed,n,d,c", CASES)
def test_nce_matches_formula(seed, n, d, c):
  _, theta, y = _inputs(seed, n, d, c)
  z = theta.argmax(1)
  expected = _ref_nce(z, y)
  np.testing.assert_allclose(tr.nce(z, y), expected, rtol=1e-5, atol=1e-6)
  # Predictions are argmaxed: probabilities and logits give the same.
  np.testing.assert_allclose(tr.nce(theta, y), expected, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(tr.nce(np.log(theta), y), expected, rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("seed,n,d,c", CASES[:2] + CASES[3:])
def test_h_score_matches_formula(seed, n, d, c):
  f, _, y = _inputs(seed, n, d, c)
  np.testing.assert_allclose(tr.h_score(f, y), _ref_h_score(f, y),
                             rtol=1e-8)


@pytest.mark.parametrize("seed,n,d,c", CASES)
def test_log_me_matches_algorithm_1(seed, n, d, c):
  # Includes n < d (CASES[2]): the zero eigenvalues of F^T F beyond the thin
  # SVD must enter log|A| as log(alpha).
  f, _, y = _inputs(seed, n, d, c)
  np.testing.assert_allclose(tr.log_me(f, y), _ref_log_me(f, y),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed,n,d,c", CASES)
@pytest.mark.parametrize("eps", [1e-4, 0.5])
def test_transrate_matches_formula(seed, n, d, c, eps):
  f, _, y = _inputs(seed, n, d, c)
  np.testing.assert_allclose(tr.transrate(f, y, eps), _ref_transrate(f, y,
                                                                     eps),
                             rtol=1e-8, atol=1e-8)


# -------------------------------------------------------- invariances
def test_leep_and_nce_of_a_perfect_predictor_are_zero():
  y = np.array([0, 1, 2, 2, 1, 0, 0])
  np.testing.assert_allclose(tr.leep(np.eye(3)[y], y), 0.0, atol=1e-6)
  # Any source labelling that determines the target label: NCE = 0.
  np.testing.assert_allclose(tr.nce((y + 1) % 3, y), 0.0, atol=1e-6)
  # A finer source labelling determines it too.
  np.testing.assert_allclose(tr.nce(np.arange(7), y), 0.0, atol=1e-6)


def test_uninformative_source_gives_minus_label_entropy():
  y = np.array([0, 0, 1, 1, 1, 1])
  h = -(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3))
  np.testing.assert_allclose(tr.nce(np.zeros(6, int), y), -h, rtol=1e-6)
  np.testing.assert_allclose(tr.leep(np.full((6, 4), 0.25), y), -h,
                             rtol=1e-6)


def test_scores_are_invariant_to_renaming_classes():
  f, theta, y = _inputs(4, 40, 5, 3)
  renamed = np.array([7, 2, 4])[y]  # gaps in the ids are no classes
  perm = np.array([2, 0, 3, 1])
  for name in tr.SCORES:
    a = tr.scores(f, theta, y)[name]
    b = tr.scores(f, theta[:, perm], renamed)[name]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_h_score_invariant_to_permuting_and_mixing_features():
  f, _, y = _inputs(5, 50, 6, 4)
  perm = np.random.default_rng(0).permutation(6)
  np.testing.assert_allclose(tr.h_score(f[:, perm], y), tr.h_score(f, y),
                             rtol=1e-9)
  mix = np.random.default_rng(1).normal(size=(6, 6)) + 3 * np.eye(6)
  np.testing.assert_allclose(tr.h_score(f @ mix, y), tr.h_score(f, y),
                             rtol=1e-7)


def test_h_score_is_bounded_and_saturates_with_few_examples():
  f, _, y = _inputs(6, 50, 6, 4)
  assert 0 <= tr.h_score(f, y) <= 3 + 1e-9
  # n - 1 <= d: every backbone gets C - 1.
  f, _, y = _inputs(7, 10, 20, 3)
  np.testing.assert_allclose(tr.h_score(f, y), 2.0, rtol=1e-6)


def test_transrate_invariant_to_rotation():
  f, _, y = _inputs(8, 40, 5, 3)
  q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(5, 5)))
  np.testing.assert_allclose(tr.transrate(f @ q, y), tr.transrate(f, y),
                             rtol=1e-8)


@pytest.mark.parametrize("name", ["log_me", "h_score", "transrate"])
def test_feature_scores_prefer_informative_features_over_noise(name):
  rng = np.random.default_rng(9)
  y = rng.integers(0, 4, 200)
  informative = 2.0 * np.eye(4)[y] @ rng.normal(size=(4, 16)) + rng.normal(
      size=(200, 16))
  noise = rng.normal(size=(200, 16)) * informative.std()
  fn = getattr(tr, name)
  assert fn(informative, y) > fn(noise, y) + 0.1


def test_log_me_is_stable_for_near_collinear_features():
  f, _, y = _inputs(10, 50, 4, 3)
  f = np.concatenate([f, f[:, :2] + 1e-9, np.zeros((50, 3))], 1)
  assert np.isfinite(tr.log_me(f, y))
  assert np.isfinite(tr.h_score(f, y))
  assert np.isfinite(tr.transrate(f, y))


@pytest.mark.parametrize("d", [4, 40])
def test_features_that_carry_nothing_score_as_noise(d):
  # F = 0: LogME is the evidence of y ~ N(0, 1/beta) alone, beta = n/||y||^2.
  y = np.array([0, 0, 1, 1, 1, 2] * 5)
  n, counts = len(y), np.bincount(y)
  beta = n / counts
  expected = np.mean(n / 2 * np.log(beta) - beta / 2 * counts
                     - n / 2 * np.log(2 * np.pi)) / n
  f = np.zeros((n, d))
  np.testing.assert_allclose(tr.log_me(f, y), expected, rtol=1e-5)
  assert tr.h_score(f, y) == 0.0 and tr.transrate(f, y) == 0.0


# ----------------------------------------------------- ranking judges
@pytest.mark.parametrize("a,b,expected", [
    ([1, 2, 3, 4], [1, 3, 2, 4], 4 / 6),          # 5 concordant, 1 not
    ([1, 2, 3], [3, 2, 1], -1.0),
    ([0.1, 0.5, 0.2], [0.1, 0.5, 0.2], 1.0),
    ([1, 1, 2], [1, 2, 3], 2 / math.sqrt(6)),     # tau-b: one tie in a
])
def test_kendall_tau_hand_computed(a, b, expected):
  np.testing.assert_allclose(tr.kendall_tau(a, b), expected, rtol=1e-12)


def test_kendall_tau_of_a_constant_is_nan():
  assert math.isnan(tr.kendall_tau([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("scores,accs,hit", [
    ([0.1, 0.9, 0.5], [0.6, 0.8, 0.7], True),
    ([0.1, 0.9, 0.5], [0.6, 0.7, 0.8], False),
    ([0.9, 0.9, 0.5], [0.8, 0.7, 0.6], False),    # a tied pick picks none
    ([0.9, 0.9, 0.5], [0.8, 0.8, 0.6], True),
    ([0.2, 0.9, 0.5], [0.8, 0.8, 0.6], True),     # tied best: either counts
])
def test_top1_hit_hand_computed(scores, accs, hit):
  assert tr.top1_hit(scores, accs) is hit


# ---------------------------------------------------------- bad input
F, THETA, Y = _inputs(11, 20, 3, 2)


@pytest.mark.parametrize("call,match", [
    (lambda: tr.log_me(F[:, 0], Y), "shape"),
    (lambda: tr.log_me(F[:1], Y[:1]), "n >= 2"),
    (lambda: tr.h_score(np.where(F > 1, np.nan, F), Y), "NaN"),
    (lambda: tr.transrate(F, Y[:-1]), "19 entries but there are 20"),
    (lambda: tr.transrate(F, Y, eps=0.0), "eps"),
    (lambda: tr.h_score(F, Y.astype(np.float32)), "integer"),
    (lambda: tr.h_score(F, Y - 1), ">= 0"),
    (lambda: tr.h_score(F, Y[:, None]), "1-D"),
    (lambda: tr.leep(THETA * 2, Y), "probabilities"),
    (lambda: tr.leep(-THETA, Y), "probabilities"),
    (lambda: tr.nce(np.zeros((20, 2, 2)), Y), "pseudo-labels"),
    (lambda: tr.nce(np.full(20, -1), Y), ">= 0"),
    (lambda: tr.scores(F, THETA[:10], Y), "different numbers"),
    (lambda: tr.log_me(F, Y, max_iter=0), "max_iter"),
    (lambda: tr.kendall_tau([1, 2], [1, 2, 3]), "same length"),
    (lambda: tr.kendall_tau([1], [1]), ">= 2"),
    (lambda: tr.kendall_tau([1, np.nan], [1, 2]), "NaN"),
    (lambda: tr.top1_hit(["a", "b"], [1, 2]), "numbers"),
])
def test_bad_inputs_raise_one_clear_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()
