"""KMM against scipy's SLSQP on the same QP, and its defining properties."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from tljax.methods import kmm


def _np_qp(xs, xt, gamma, bound, eps):
  """The QP of Huang et al. (2007) built in numpy and solved by SLSQP."""
  ns, nt = len(xs), len(xt)
  sq = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)
  k = np.exp(-gamma * sq(xs, xs))
  kappa = ns / nt * np.exp(-gamma * sq(xs, xt)).sum(1)
  cons = [{"type": "ineq", "fun": lambda b: ns * (1 + eps) - b.sum(),
           "jac": lambda b: -np.ones(ns)},
          {"type": "ineq", "fun": lambda b: b.sum() - ns * (1 - eps),
           "jac": lambda b: np.ones(ns)}]
  res = scipy.optimize.minimize(
      lambda b: 0.5 * b @ k @ b - kappa @ b, np.ones(ns),
      jac=lambda b: k @ b - kappa, bounds=[(0, bound)] * ns,
      constraints=cons, method="SLSQP",
      options={"maxiter": 1000, "ftol": 1e-12})
  assert res.success, res.message
  return res.x, k, kappa


@pytest.mark.parametrize("bound,eps", [(1000.0, None), (3.0, 0.1),
                                       (1.5, 0.0)])
def test_kmm_matches_scipy_qp(bound, eps):
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(30, 2))
  xt = rng.normal([1.0, 0.5], 0.6, size=(25, 2))
  ns = len(xs)
  eps_val = (np.sqrt(ns) - 1) / np.sqrt(ns) if eps is None else eps
  gamma = 0.5
  w = kmm.kmm_weights(xs, xt, gamma=gamma, B=bound, eps=eps, max_iter=5000)
  ref, k, kappa = _np_qp(xs, xt, gamma, bound, eps_val)
  obj = lambda b: 0.5 * b @ k @ b - kappa @ b
  # constraints hold
  assert w.min() >= 0 and w.max() <= bound + 1e-4
  assert abs(w.sum() - ns) <= ns * eps_val + 1e-3
  # the same optimum as an independent solver
  assert obj(w.astype(np.float64)) <= obj(ref) + 1e-3 * abs(obj(ref))
  np.testing.assert_allclose(w, ref, atol=0.05 * max(1.0, ref.max()))


def test_kmm_upweights_source_points_near_the_target():
  rng = np.random.default_rng(1)
  xs = rng.normal(0.0, 1.0, size=(200, 1))
  xt = rng.normal(1.5, 0.4, size=(150, 1))
  w = kmm.kmm_weights(xs, xt)
  near = np.abs(xs[:, 0] - 1.5) < 0.5
  far = xs[:, 0] < 0.0
  assert w[near].mean() > 3 * w[far].mean()
  # importance weights approximate p_t/p_s: their correlation is positive
  from scipy.stats import norm
  ratio = norm.pdf(xs[:, 0], 1.5, 0.4) / norm.pdf(xs[:, 0], 0, 1)
  assert np.corrcoef(w, np.minimum(ratio, 50))[0, 1] > 0.5


def test_kmm_identical_domains_give_near_uniform_weights():
  rng = np.random.default_rng(2)
  xs = rng.normal(size=(60, 3))
  w = kmm.kmm_weights(xs, xs.copy())
  np.testing.assert_allclose(w, 1.0, atol=0.05)


def test_projection_against_scipy():
  rng = np.random.default_rng(3)
  for lo, hi in ((4.0, 6.0), (9.0, 11.0), (0.0, 100.0)):
    v = rng.normal(1.0, 2.0, size=8)
    p = np.asarray(kmm.project_box_sum(jnp.asarray(v, jnp.float32), 2.0,
                                       lo, hi))
    res = scipy.optimize.minimize(
        lambda b: ((b - v) ** 2).sum(), np.clip(v, 0, 2), method="SLSQP",
        jac=lambda b: 2 * (b - v), bounds=[(0, 2)] * 8,
        constraints=[{"type": "ineq", "fun": lambda b: hi - b.sum()},
                     {"type": "ineq", "fun": lambda b: b.sum() - lo}],
        options={"ftol": 1e-12})
    np.testing.assert_allclose(p, res.x, atol=1e-4)


def test_bad_inputs():
  good = np.random.default_rng(4).normal(size=(5, 3))
  with pytest.raises(ValueError, match="differ in shape"):
    kmm.kmm_weights(good, np.ones((5, 2)))
  with pytest.raises(ValueError, match="empty domain"):
    kmm.kmm_weights(good, np.ones((0, 3)))
  bad = good.copy()
  bad[2, 2] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    kmm.kmm_weights(bad, good)
  with pytest.raises(ValueError, match="infeasible"):
    kmm.kmm_weights(good, good, B=0.5, eps=0.1)
