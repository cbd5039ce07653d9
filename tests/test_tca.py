"""TCA against a straightforward numpy/scipy implementation of Pan et al.
(2011): the non-symmetric matrix (KLK + mu I)^-1 KHK handed to a general
eigensolver, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from tljax.methods import tca as tca_lib


def _np_tca(xs, xt, m, kernel, mu, gamma, whiten):
  x = np.concatenate([xs, xt]).astype(np.float64)
  n, ns = len(x), len(xs)
  nt = n - ns
  if kernel == "linear":
    k = x @ x.T
  else:
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    k = np.exp(-gamma * d2)
  l = np.zeros((n, n))
  l[:ns, :ns] = 1 / ns ** 2
  l[ns:, ns:] = 1 / nt ** 2
  l[:ns, ns:] = l[ns:, :ns] = -1 / (ns * nt)
  h = np.eye(n) - np.ones((n, n)) / n
  a = k @ l @ k + mu * np.eye(n)
  b = k @ h @ k
  vals, vecs = scipy.linalg.eig(np.linalg.solve(a, b))
  order = np.argsort(-vals.real)[:m]
  w = vecs[:, order].real
  norm = b if whiten else a
  w = w / np.sqrt(np.einsum("im,ij,jm->m", w, norm, w))
  return k @ w, vals.real[order]


def _shifted_gaussians(seed, n=60, d=6):
  """Two classes split along feature 0; the target is shifted along 0 and 1,
  enough that a classifier on raw features labels much of it wrongly."""
  rng = np.random.default_rng(seed)
  def make(n, shift):
    y = rng.integers(0, 2, n)
    x = 0.5 * rng.normal(size=(n, d))
    x[:, 0] += np.where(y == 1, 2.0, -2.0)
    x[:, :2] += shift
    return x.astype(np.float32), y
  xs, ys = make(n, np.array([0.0, 0.0]))
  xt, yt = make(n, np.array([2.5, 6.0]))
  return xs, ys, xt, yt


def _match_columns_up_to_sign(z, z_ref, atol):
  for i in range(z_ref.shape[1]):
    a, b = z[:, i], z_ref[:, i]
    sign = np.sign(a @ b)
    np.testing.assert_allclose(sign * a, b, atol=atol * np.abs(b).max())


@pytest.mark.parametrize("kernel,whiten", [
    ("linear", False), ("linear", True), ("rbf", False), ("rbf", True)])
def test_tca_matches_numpy_reference(kernel, whiten):
  xs, ys, xt, yt = _shifted_gaussians(0, n=40, d=5)
  m, mu, gamma = 3, 1.0, 0.2
  t = tca_lib.TCA(n_components=m, kernel=kernel, mu=mu, gamma=gamma,
                  whiten=whiten).fit(xs, xt)
  z = np.concatenate([t.transform(xs), t.transform(xt)])
  z_ref, vals = _np_tca(xs, xt, m, kernel, mu, gamma, whiten)
  np.testing.assert_allclose(t.eigenvalues_, vals, rtol=2e-3)
  # same subspace (up to rotation) ...
  assert np.max(scipy.linalg.subspace_angles(z, z_ref)) < 1e-2
  # ... and the same components up to sign (eigenvalues are distinct here)
  _match_columns_up_to_sign(z, z_ref, atol=1e-2)
  # the same 1-NN predictions on the target
  ref_pred = tca_lib.one_nn_predict(z_ref[:len(xs)], ys, z_ref[len(xs):])
  pred = tca_lib.one_nn_predict(z[:len(xs)], ys, z[len(xs):])
  assert np.mean(ref_pred == yt) == np.mean(pred == yt)


def test_primal_matches_scipy_generalized_eigh():
  xs, _, xt, _ = _shifted_gaussians(1, n=50, d=6)
  x = np.concatenate([xs, xt]).astype(np.float64)
  diff = xs.mean(0) - xt.mean(0)
  xc = x - x.mean(0)
  vals, vecs = scipy.linalg.eigh(xc.T @ xc,
                                 np.outer(diff, diff) + 0.5 * np.eye(6))
  ref = x @ vecs[:, ::-1][:, :2]
  t = tca_lib.TCA(n_components=2, kernel="primal", mu=0.5).fit(xs, xt)
  np.testing.assert_allclose(t.eigenvalues_, vals[::-1][:2], rtol=1e-3)
  _match_columns_up_to_sign(np.concatenate([t.transform(xs),
                                            t.transform(xt)]), ref, atol=1e-3)


@pytest.mark.parametrize("kernel", ["linear", "rbf", "primal"])
def test_tca_classifies_shifted_gaussian_target_well(kernel):
  # ADAPT's TCA gives chance on such a target; the paper's method does not.
  xs, ys, xt, yt = _shifted_gaussians(2, n=150, d=8)
  tca = tca_lib.TCA(n_components=2 if kernel != "rbf" else 30,
                    kernel=kernel).fit(xs, xt)
  acc = tca_lib.embedding_accuracies(tca, xs, ys, xt, yt,
                                     classifiers=("1nn", "logreg"))
  assert acc["raw_1nn"] < 0.8 and acc["raw_logreg"] < 0.8, acc
  assert acc["1nn"] > 0.9, acc
  if kernel != "rbf":
    assert acc["logreg"] > 0.9, acc


def test_n_components_capped_at_rank():
  xs, _, xt, _ = _shifted_gaussians(3, n=30, d=3)
  t = tca_lib.TCA(n_components=30, kernel="linear").fit(xs, xt)
  assert t.n_components_ <= 3
  assert t.transform(xt[:5]).shape == (5, t.n_components_)


def test_one_nn_against_brute_force():
  rng = np.random.default_rng(4)
  tr, te = rng.normal(size=(20, 3)), rng.normal(size=(7, 3))
  ytr = rng.integers(0, 4, 20)
  ref = ytr[[np.argmin(((tr - p) ** 2).sum(1)) for p in te]]
  np.testing.assert_array_equal(tca_lib.one_nn_predict(tr, ytr, te), ref)


def test_bad_inputs_raise_clear_errors():
  good = np.ones((5, 3), np.float32) + np.arange(15).reshape(5, 3)
  t = tca_lib.TCA(n_components=2)
  with pytest.raises(ValueError, match="differ in shape"):
    t.fit(good, np.ones((5, 4)))
  with pytest.raises(ValueError, match="empty domain"):
    t.fit(good, np.ones((0, 3)))
  bad = good.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    t.fit(good, bad)
  with pytest.raises(ValueError, match="before transform"):
    t.transform(good)
  t.fit(good, good + 1.0)
  with pytest.raises(ValueError, match="fitted on 3"):
    t.transform(np.ones((2, 4)))
  with pytest.raises(ValueError, match="unknown TCA kernel"):
    tca_lib.TCA(kernel="poly")
  with pytest.raises(ValueError, match="mu must be > 0"):
    tca_lib.TCA(mu=0.0)
