"""Transfer Component Analysis (TCA): a closed-form shared feature space.

Pan, Tsang, Kwok & Yang (2011), "Domain Adaptation via Transfer Component
Analysis", IEEE TNN 22(2). With the kernel matrix ``K`` of the pooled source
and target points (``n = n_s + n_t``), the MMD matrix ``L`` (``1/n_s^2``
within the source, ``1/n_t^2`` within the target, ``-1/(n_s n_t)`` across)
and the centering matrix ``H = I - 11^T/n``, TCA solves

    min_W  tr(W^T K L K W) + mu tr(W^T W)   s.t.  W^T K H K W = I_m

whose solution is the ``m`` leading eigenvectors of
``(K L K + mu I)^{-1} K H K``. That matrix is not symmetric, so it must not be
handed to a symmetric eigensolver as is. We solve the equivalent generalized
symmetric problem ``K H K w = lambda (K L K + mu I) w``: with the Cholesky
factor ``K L K + mu I = C C^T`` it becomes the ordinary symmetric problem
``C^{-1} K H K C^{-T} v = lambda v`` (``jnp.linalg.eigh``), and
``w = C^{-T} v``. The paper also gives the problem as the trace ratio
``max tr((W^T (K L K + mu I) W)^{-1} W^T K H K W)``, whose solutions are the
same eigenvectors at any scale. By default we keep the scale ``eigh`` gives,
``W^T (K L K + mu I) W = I``, so component ``i`` has variance ``lambda_i``
over the training points and weak components weigh little in a nearest-
neighbour classifier. ``whiten=True`` rescales to the paper's equality
constraint ``W^T K H K W = I`` (every component with the same variance).
The embedding is ``Z = K W`` for the training points and ``k(x, X) W`` for
new ones. Components with a zero eigenvalue (beyond the rank of ``K H K``,
e.g. more than ``d`` with a linear kernel) are dropped.

``kernel="primal"`` is the linear primal form (Long et al., 2013, "Transfer
Feature Learning with Joint Distribution Adaptation", with no conditional
term): a projection ``A`` of the ``d`` input features solving
``X^T H X a = lambda (X^T L X + mu I) a`` with ``d x d`` matrices only, so it
scales to any ``n`` (``X^T L X`` is the outer product of the mean difference).
Its regularizer is ``mu ||A||^2`` rather than ``mu ||W||^2``, so it is not
numerically the same embedding as ``kernel="linear"``.

Memory: the kernel forms hold about six ``n x n`` float32 matrices at the
peak (about 25 bytes per ``n^2``: 1.6 GB at n = 8,000) and their time grows
as ``n^3`` (``eigh``); measurements are in
``docs/results_domain_adaptation.md``. Subsample (``tca.max_examples`` in
the experiment config) or use ``kernel="primal"`` (``d x d`` matrices) for
more points.

  >>> import numpy as np
  >>> rng = np.random.default_rng(0)
  >>> xs = rng.normal(size=(50, 5)); xt = rng.normal(size=(40, 5)) + 2.0
  >>> tca = TCA(n_components=2).fit(xs, xt)
  >>> tca.transform(xt).shape
  (40, 2)
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
import numpy as np

from tljax import ops
from tljax.losses.alignment import check_domains

KERNELS = ("linear", "rbf", "primal")


def _as_2d(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim < 2:
    raise ValueError(f"{name} must have the example axis first, shape "
                     f"(n, d, ...); got {x.shape}.")
  return x.reshape(len(x), -1)


def _kernel(a, b, kernel: str, gamma):
  if kernel == "linear":
    return a @ b.T
  return ops.gaussian_kernel(a, b, gamma=gamma)


def _generalized_eigh(b: jax.Array, a: jax.Array, m: int):
  """Leading ``m`` solutions of ``b w = lambda a w``, ``a`` SPD, ``b`` sym.

  Returns ``(lambdas (m,), W (k, m))`` with ``W^T a W = I``.
  """
  c = jnp.linalg.cholesky(a)
  # M = C^{-1} B C^{-T}, symmetric; symmetrize the rounding errors away.
  left = solve_triangular(c, b, lower=True)          # C^{-1} B
  mat = solve_triangular(c, left.T, lower=True)      # C^{-1} (C^{-1} B)^T
  mat = 0.5 * (mat + mat.T)
  lam, v = jnp.linalg.eigh(mat)
  lam, v = lam[::-1][:m], v[:, ::-1][:, :m]
  w = solve_triangular(c.T, v, lower=False)          # C^{-T} v
  return lam, w


@functools.partial(jax.jit, static_argnames=("ns", "kernel", "m"))
def _fit_dual(x, gamma, mu, *, ns: int, kernel: str, m: int):
  n = x.shape[0]
  k = _kernel(x, x, kernel, gamma)
  e = jnp.where(jnp.arange(n) < ns, 1.0 / ns, -1.0 / (n - ns))
  ke = k @ e                                  # K L K = (K e)(K e)^T
  hk = k - jnp.mean(k, axis=0, keepdims=True)  # H K
  khk = hk.T @ hk                             # K H K = (H K)^T (H K)
  a = jnp.outer(ke, ke) + mu * jnp.eye(n, dtype=x.dtype)
  return _generalized_eigh(khk, a, m)


@functools.partial(jax.jit, static_argnames=("ns", "m"))
def _fit_primal(x, mu, *, ns: int, m: int):
  d = x.shape[1]
  diff = jnp.mean(x[:ns], 0) - jnp.mean(x[ns:], 0)   # X^T L X = diff diff^T
  xc = x - jnp.mean(x, 0, keepdims=True)
  xhx = xc.T @ xc                                    # X^T H X
  a = jnp.outer(diff, diff) + mu * jnp.eye(d, dtype=x.dtype)
  return _generalized_eigh(xhx, a, m)


class TCA:
  """Transfer Component Analysis (Pan et al., 2011); see the module doc.

  Args:
    n_components: ``m``, the number of transfer components. Capped at the
      number of components with a positive eigenvalue (the rank of
      ``K H K``), which ``n_components_`` reports after ``fit``.
    kernel: ``linear``, ``rbf`` (Gaussian) or ``primal`` (linear, ``d x d``
      matrices only).
    mu: the trade-off ``mu > 0`` between ``tr(W^T W)`` and the MMD term.
    gamma: the ``rbf`` kernel's ``exp(-gamma ||x - y||^2)``; default
      ``1 / (d * var(X))`` of the pooled training data.
    whiten: scale ``W`` to ``W^T K H K W = I`` (the paper's constraint)
      instead of ``W^T (K L K + mu I) W = I``; see the module doc.

  Attributes (after ``fit``):
    components_: ``W``, ``(n, m)`` (or ``(d, m)`` for ``primal``).
    eigenvalues_: the ``m`` leading generalized eigenvalues.
    n_components_: the number kept.
    gamma_: the rbf gamma used.
  """

  def __init__(self, n_components: int = 30, kernel: str = "linear",
               mu: float = 1.0, gamma: float | None = None, *,
               whiten: bool = False):
    if kernel not in KERNELS:
      raise ValueError(f"unknown TCA kernel {kernel!r}; choose one of "
                       f"{KERNELS}")
    if not n_components >= 1:
      raise ValueError(f"n_components must be >= 1, got {n_components}")
    if not mu > 0:
      raise ValueError(f"mu must be > 0 (it keeps K L K + mu I positive "
                       f"definite), got {mu}")
    if gamma is not None and not gamma > 0:
      raise ValueError(f"gamma must be > 0 or None, got {gamma}")
    self.n_components = int(n_components)
    self.kernel = kernel
    self.mu = float(mu)
    self.gamma = gamma
    self.whiten = bool(whiten)

  def fit(self, xs, xt) -> "TCA":
    """Learns the transfer components from source ``xs`` and target ``xt``.

    Args:
      xs: ``(n_s, ...)`` source inputs (flattened per example).
      xt: ``(n_t, ...)`` target inputs, unlabelled.

    Returns:
      ``self``.

    Raises:
      ValueError: if the feature shapes differ, a domain is empty, or an
        input holds NaN or Inf.
    """
    check_domains(xs, xt, what="TCA inputs")
    xs, xt = _as_2d(xs, "xs"), _as_2d(xt, "xt")
    x = np.concatenate([xs, xt])
    ns, d = len(xs), x.shape[1]
    var = float(x.var())
    self.gamma_ = (self.gamma if self.gamma is not None
                   else 1.0 / (d * var if var > 0 else 1.0))
    if self.kernel == "primal":
      m = min(self.n_components, d)
      lam, w = _fit_primal(jnp.asarray(x), self.mu, ns=ns, m=m)
    else:
      m = min(self.n_components, len(x))
      lam, w = _fit_dual(jnp.asarray(x), self.gamma_, self.mu, ns=ns,
                         kernel=self.kernel, m=m)
    lam = np.asarray(lam, np.float64)
    # Keep the components with a clearly positive eigenvalue: the others lie
    # in the null space of K H K and carry no variance (and cannot be scaled
    # to the constraint).
    keep = lam > max(lam[0], 0.0) * 1e-5
    if not keep.any():
      raise ValueError("TCA found no component with positive variance: the "
                       "inputs are constant. Check the features.")
    w = np.asarray(w)[:, keep]
    lam = lam[keep]
    if self.whiten:
      # W^T A W = I from eigh, so w^T (K H K) w = lambda: divide by
      # sqrt(lambda) to meet the paper's constraint W^T K H K W = I.
      w = w / np.sqrt(lam)[None, :]
    self.components_ = w
    self.eigenvalues_ = lam
    self.n_components_ = int(w.shape[1])
    self._x_fit = x
    self._n_source = ns
    return self

  def transform(self, x) -> np.ndarray:
    """Embeds source, target or new points: ``k(x, X_fit) W``.

    Args:
      x: ``(n, ...)`` inputs with the same feature shape as in ``fit``.

    Returns:
      ``(n, n_components_)`` float32 embedding.

    Raises:
      ValueError: if called before ``fit``, or on a feature-shape mismatch
        or NaN.
    """
    if not hasattr(self, "components_"):
      raise ValueError("call TCA.fit(xs, xt) before transform")
    x = _as_2d(x, "x")
    if x.shape[1] != self._x_fit.shape[1]:
      raise ValueError(f"transform got {x.shape[1]} features per example but "
                       f"TCA was fitted on {self._x_fit.shape[1]}; pass inputs "
                       "from the same feature space.")
    if not np.all(np.isfinite(x)):
      raise ValueError("transform input contains NaN or Inf; clean it first.")
    w = jnp.asarray(self.components_)
    if self.kernel == "primal":
      return np.asarray(jnp.asarray(x) @ w)
    out = []
    xf = jnp.asarray(self._x_fit)
    for start in range(0, len(x), 2048):  # bound the k(x, X) block's memory
      kx = _kernel(jnp.asarray(x[start:start + 2048]), xf, self.kernel,
                   self.gamma_)
      out.append(np.asarray(kx @ w))
    return np.concatenate(out) if out else np.zeros((0, w.shape[1]),
                                                    np.float32)


# ------------------------------------------------------------ classifiers
def one_nn_predict(train_z, train_y, test_z, *, block: int = 2048
                   ) -> np.ndarray:
  """1-nearest-neighbour labels (Euclidean), in blocks of test points."""
  train_z = jnp.asarray(train_z, jnp.float32)
  train_y = np.asarray(train_y)
  test_z = np.asarray(test_z, np.float32)
  out = []
  for start in range(0, len(test_z), block):
    d = ops.pairwise_sq_distances(jnp.asarray(test_z[start:start + block]),
                                  train_z)
    out.append(train_y[np.asarray(jnp.argmin(d, axis=1))])
  return np.concatenate(out) if out else np.zeros((0,), train_y.dtype)


def logistic_regression_predict(train_z, train_y, test_z, *, c: float = 1.0,
                                seed: int = 0) -> np.ndarray:
  """Multinomial logistic regression (scikit-learn, L2 ``C``).

  Features are centred on the training mean and divided by one scalar, the
  training features' overall standard deviation. Per-feature standardization
  is avoided on purpose: under a domain shift a feature that is nearly
  constant in the source (a border pixel that a rotation fills) would be
  blown up on the target.
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  train_z = np.asarray(train_z, np.float64)
  mean = train_z.mean(0)
  scale = float(train_z.std()) or 1.0
  clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
  clf.fit((train_z - mean) / scale, np.asarray(train_y))
  return clf.predict((np.asarray(test_z, np.float64) - mean) / scale)


CLASSIFIERS = {"1nn": one_nn_predict, "logreg": logistic_regression_predict}


def classify(train_z, train_y, test_z, classifier: str = "1nn") -> np.ndarray:
  """Labels of ``test_z`` from a ``1nn`` or ``logreg`` classifier."""
  if classifier not in CLASSIFIERS:
    raise ValueError(f"unknown classifier {classifier!r}; choose one of "
                     f"{sorted(CLASSIFIERS)}")
  return CLASSIFIERS[classifier](train_z, train_y, test_z)


def embedding_accuracies(tca: "TCA", xs, ys, x_eval, y_eval, *,
                         classifiers: Sequence[str] = ("1nn",)) -> dict:
  """Accuracy on ``(x_eval, y_eval)`` of each classifier trained on the
  fitted ``tca``'s embedding of the labelled source ``(xs, ys)``, and of the
  same classifier on the raw inputs (the baseline TCA must beat).

  Returns:
    ``{'<clf>': acc, 'raw_<clf>': acc, ...}``.
  """
  zs, ze = tca.transform(xs), tca.transform(x_eval)
  ye = np.asarray(y_eval)
  out = {}
  for clf in classifiers:
    out[clf] = float(np.mean(classify(zs, ys, ze, clf) == ye))
    out[f"raw_{clf}"] = float(np.mean(
        classify(_as_2d(xs, "xs"), ys, _as_2d(x_eval, "x_eval"), clf) == ye))
  return out
