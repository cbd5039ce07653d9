"""TCA and JDA: closed-form shared feature spaces for domain adaptation.

Transfer Component Analysis (Pan, Tsang, Kwok & Yang, 2011, "Domain
Adaptation via Transfer Component Analysis", IEEE TNN 22(2)) and Joint
Distribution Adaptation (Long, Wang, Ding, Sun & Yu, 2013, "Transfer Feature
Learning with Joint Distribution Adaptation", ICCV).

With the kernel matrix ``K`` of the pooled source and target points
(``n = n_s + n_t``), an MMD matrix ``M`` and the centering matrix
``H = I - 11^T/n``, TCA solves

    min_W  tr(W^T K M K W) + mu tr(W^T W)   s.t.  W^T K H K W = I_m

whose solution is the ``m`` leading eigenvectors of
``(K M K + mu I)^{-1} K H K``, i.e. of the generalized symmetric problem
``K H K w = lambda (K M K + mu I) w``. TCA's ``M`` is ``e e^T`` with
``e_i = 1/n_s`` on the source and ``-1/n_t`` on the target (the marginal
MMD). JDA adds one term per class ``c``, ``e_c e_c^T`` with ``1/n_s^c`` on the
source points of class ``c`` and ``-1/n_t^c`` on the target points whose
pseudo-label is ``c``; the pseudo-labels come from 1-NN in the previous
iteration's embedding, so the problem is solved again ``iterations`` times.

Scale: the problem above is not invariant to the scale of the inputs (``K``
grows as the square of it, ``mu`` does not), and in float32 a large scale
ruins the Cholesky factor of ``K M K + mu I`` (standard-normal inputs with
``d = 800`` gave NaN components). We therefore solve it for normalised
quantities,
as the reference code of Long et al. does: the linear kernels see the inputs
divided by ``sqrt(mean ||x||^2)`` (so ``K`` has unit mean diagonal; a no-op
on unit-norm rows, the usual protocol), and ``M`` is divided by its Frobenius
norm (``||e||^2`` for TCA), so ``mu`` means the same at any input scale and
any ``n_s, n_t``. (Compared with the unnormalised ``M``, and for inputs of
unit mean square norm, ``mu`` here is the unnormalised one times
``n_s n_t / n``.) JDA's marginal term is weighted by the number of classes
before the normalisation, as in that code. Only inputs whose every example
is the same vector are rejected as constant.

Solvers, all exact:

- ``kernel="linear"``: ``K = X X^T`` has rank ``r <= min(n, d)``; with the
  thin SVD ``X = U S V^T`` every solution lies in the span of ``U``, so the
  problem is solved in ``r x r`` (float64, leading ``m`` eigenpairs only):
  the same subspace as the ``n x n`` form, in ``O(n d min(n, d))``.
- ``kernel="primal"`` is Long et al.'s linear primal form: a projection
  ``A`` of the inputs with ``X^T H X a = lambda (X^T M X + mu I) a``,
  regularised by ``mu ||A||^2`` instead of ``mu ||W||^2`` (so not the same
  embedding as ``linear``); solved in the same ``r x r`` space.
- ``kernel="rbf"``: the ``n x n`` problem in float32 with JAX. ``K M K +
  mu I = mu I + Q Q^T`` has low rank plus identity, so its inverse square root
  is formed exactly from the ``n x r`` factor ``Q`` (no Cholesky of an ill-
  conditioned matrix) and ``jnp.linalg.eigh`` solves the symmetric problem.
  It holds several ``n x n`` float32 matrices and its time grows as ``n^3``;
  measurements are in ``docs/results_domain_adaptation.md``.

The eigenvectors' scale is ``scale``: ``"unit"`` (``||w|| = 1``, what
``eigs`` returns in Long et al.'s MATLAB code; JDA's default), ``"mmd"``
(``W^T (K M K + mu I) W = I``, TCA's default: component ``i`` has variance
``lambda_i`` over the training points, so weak components weigh little in a
nearest-neighbour classifier) or ``"whiten"`` (the paper's constraint
``W^T K H K W = I``, every component with the same variance). The embedding
is ``Z = K W`` (``X A`` for ``primal``); with ``normalize_rows`` (JDA's
default, as in that code "for better classification performance") each
embedded row is scaled to unit L2 norm. Components with a zero eigenvalue
are dropped.

  >>> import numpy as np
  >>> rng = np.random.default_rng(0)
  >>> xs = rng.normal(size=(50, 5)); xt = rng.normal(size=(40, 5)) + 2.0
  >>> tca = TCA(n_components=2).fit(xs, xt)
  >>> tca.transform(xt).shape
  (40, 2)
  >>> ys = (xs[:, 0] > 0).astype(int)
  >>> jda = JDA(n_components=2, iterations=3).fit(xs, ys, xt)
  >>> jda.target_labels_.shape, jda.transform(xt).shape
  ((40,), (40, 2))

Measured on COIL-20 (``benchmarks/coil.py``, ``docs/results_coil.md``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import threadpoolctl

from tljax import ops
from tljax.losses.alignment import check_domains

KERNELS = ("linear", "rbf", "primal")
SCALES = ("unit", "mmd", "whiten")
# Components whose eigenvalue is below this fraction of the largest carry no
# variance (beyond the rank of K H K) and are dropped.
_KEEP_RTOL = 1e-5
# float64 eigh of at most this size runs on one BLAS thread: LAPACK's
# tridiagonalisation is memory-bound at this size, and threaded OpenBLAS on a
# busy CPU was several times slower than serial (docs/results_coil.md).
_SERIAL_EIGH_MAX = 4096


def _eigh(a: np.ndarray, **kw):
  """``scipy.linalg.eigh``, serial for small matrices (see above)."""
  limit = 1 if len(a) <= _SERIAL_EIGH_MAX else None
  with threadpoolctl.threadpool_limits(limit, user_api="blas"):
    return scipy.linalg.eigh(a, **kw)


def _as_2d(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim < 2:
    raise ValueError(f"{name} must have the example axis first, shape "
                     f"(n, d, ...); got {x.shape}.")
  return x.reshape(len(x), -1)


# ------------------------------------------------------------- MMD matrices
def mmd_factor(ns: int, nt: int, ys=None, yt_pseudo=None) -> np.ndarray:
  """``E`` (``(n, r)`` float64) with ``E E^T`` the normalised MMD matrix.

  ``E E^T = M / ||M||_F`` where ``M = e_0 e_0^T`` (TCA, Pan et al. 2011) or,
  with labels, ``M = C e_0 e_0^T + sum_c e_c e_c^T`` (JDA, Long et al. 2013,
  the marginal term weighted by the number ``C`` of source classes as in
  their code). ``e_c`` is ``1/n_s^c`` on the source points of class ``c`` and
  ``-1/n_t^c`` on the target points pseudo-labelled ``c`` (zero there when no
  target point has that label).

  Args:
    ns: number of source points (they come first).
    nt: number of target points.
    ys: ``(ns,)`` source labels, or ``None`` for TCA's marginal term only.
    yt_pseudo: ``(nt,)`` target pseudo-labels (with ``ys``).

  Returns:
    ``E``, one column per term.
  """
  n = ns + nt
  e0 = np.concatenate([np.full(ns, 1.0 / ns), np.full(nt, -1.0 / nt)])
  if ys is None or yt_pseudo is None:
    return (e0 / np.linalg.norm(e0))[:, None]
  ys, yt_pseudo = np.asarray(ys), np.asarray(yt_pseudo)
  classes = np.unique(ys)
  cols = [np.sqrt(len(classes)) * e0]
  for c in classes:
    e = np.zeros(n)
    src, tgt = ys == c, yt_pseudo == c
    e[:ns][src] = 1.0 / src.sum()
    if tgt.any():
      e[ns:][tgt] = -1.0 / tgt.sum()
    cols.append(e)
  e = np.stack(cols, axis=1)
  # ||E E^T||_F = ||E^T E||_F: no n x n matrix needed.
  return e / np.sqrt(np.linalg.norm(e.T @ e))


# ------------------------------------------------------------------ solvers
def _linear_basis(x: np.ndarray):
  """Thin SVD ``x = U S V^T`` (float64) from the smaller Gram matrix:
  ``(S, V)`` for the singular values above the rounding level."""
  n, d = x.shape
  gram = x.T @ x if d <= n else x @ x.T
  s2, vec = _eigh(gram)
  keep = s2 > max(s2[-1], 0.0) * 1e-12
  s, vec = np.sqrt(s2[keep]), vec[:, keep]
  return s, (vec if d <= n else (x.T @ vec) / s)


def _leading_generalized(b: np.ndarray, q: np.ndarray, mu: float, m: int):
  """Leading ``m`` solutions of ``b c = lambda (q q^T + mu I) c`` (float64).

  ``A = mu I + q q^T`` is the identity plus low rank, so ``A^{-1/2}`` is
  exact from the thin SVD of ``q`` and the problem becomes the symmetric
  ``A^{-1/2} b A^{-1/2} v = lambda v`` (``eigh`` for the leading ``m`` only).

  Returns ``(lambdas (m,), C (k, m))``, largest first, ``C^T A C = I``.
  """
  k = b.shape[0]
  m = min(m, k)
  u, s, _ = np.linalg.svd(q, full_matrices=False)
  u = u[:, s > s.max() * 1e-12] if s.size and s.max() > 0 else u[:, :0]
  s = s[:u.shape[1]]
  dd = 1.0 - 1.0 / np.sqrt(1.0 + s ** 2 / mu)

  def inv_sqrt(y):  # A^{-1/2} y = mu^{-1/2} (y - U diag(dd) U^T y)
    return (y - u @ (dd[:, None] * (u.T @ y))) / np.sqrt(mu)

  c = inv_sqrt(inv_sqrt(b).T)
  lam, v = _eigh(0.5 * (c + c.T), subset_by_index=[k - m, k - 1],
                 driver="evx")
  return lam[::-1], inv_sqrt(v[:, ::-1])


def _linear_problem(x: np.ndarray, basis, primal: bool) -> np.ndarray:
  """``(H T)^T (H T)`` for ``T = X V S^p`` (``p = 0`` primal, ``1`` dual),
  without an ``n x r`` product: ``V^T X^T X V = S^2``, so
  ``V^T X^T H X V = S^2 - n (V^T xbar)(V^T xbar)^T``."""
  s, v = basis
  mv = v.T @ x.mean(0)
  b = np.diag(s ** 2) - len(x) * np.outer(mv, mv)
  return b if primal else s[:, None] * b * s[None, :]


def _fit_linear(x, basis, b, e: np.ndarray, mu: float, m: int,
                primal: bool):
  """The linear (dual) or primal problem in the ``r``-dim span of ``U``.

  With ``T = X V S^p = U S^{p+1}`` (``p = 0`` primal, ``1`` dual) the solution
  is ``c`` with ``(H T)^T (H T) c = lambda ((T^T E)(T^T E)^T + mu I) c``; the
  embedding is ``T c`` and any point maps by ``x V S^p c``. ``||c||`` is
  ``||a||`` (primal, ``a = V c``) or ``||w||`` (dual, ``w = U c``), so every
  scale carries over.
  """
  s, v = basis
  sp = np.ones_like(s) if primal else s
  lam, c = _leading_generalized(b, sp[:, None] * (v.T @ (x.T @ e)), mu, m)
  return lam, c, (v * sp) @ c


@functools.partial(jax.jit, static_argnames=("kernel", "m"))
def _fit_dense(x, e, gamma, mu, *, kernel: str, m: int):
  """The ``n x n`` dual problem in float32: ``K H K w = lambda A w`` with
  ``A = mu I + Q Q^T``, ``Q = K E``. Returns ``(lambdas, W)``, ``W^T A W = I``.
  """
  k = x @ x.T if kernel == "linear" else ops.gaussian_kernel(x, x,
                                                             gamma=gamma)
  q = k @ e                                          # (n, r)
  # A^{-1/2} = mu^{-1/2} (I - U D U^T) from the thin SVD Q = U diag(sig).
  sig2, wq = jnp.linalg.eigh(q.T @ q)
  ok = sig2 > jnp.max(sig2) * 1e-6
  u = jnp.where(ok, q @ wq / jnp.sqrt(jnp.where(ok, sig2, 1.0)), 0.0)
  dd = jnp.where(ok, 1.0 - 1.0 / jnp.sqrt(1.0 + jnp.maximum(sig2, 0.0) / mu),
                 0.0)
  hk = k - jnp.mean(k, axis=0, keepdims=True)        # H K
  g = (hk - ((hk @ u) * dd) @ u.T) / jnp.sqrt(mu)    # H K A^{-1/2}
  c = g.T @ g                                        # A^{-1/2} K H K A^{-1/2}
  lam, vec = jnp.linalg.eigh(0.5 * (c + c.T))
  lam, vec = lam[::-1][:m], vec[:, ::-1][:, :m]
  w = (vec - u @ (dd[:, None] * (u.T @ vec))) / jnp.sqrt(mu)
  return lam, w


# -------------------------------------------------------------- the models
class _Subspace:
  """What TCA and JDA share: one solve for a given MMD factor, transform."""

  def __init__(self, n_components: int, kernel: str, mu: float, gamma,
               scale: str, normalize_rows: bool, whiten: bool | None):
    if kernel not in KERNELS:
      raise ValueError(f"unknown {type(self).__name__} kernel {kernel!r}; "
                       f"choose one of {KERNELS}")
    if whiten is not None:  # the older spelling of scale="whiten"
      scale = "whiten" if whiten else scale
    if scale not in SCALES:
      raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
    if not n_components >= 1:
      raise ValueError(f"n_components must be >= 1, got {n_components}")
    if not mu > 0:
      raise ValueError(f"mu must be > 0 (it keeps K M K + mu I positive "
                       f"definite), got {mu}")
    if gamma is not None and not gamma > 0:
      raise ValueError(f"gamma must be > 0 or None, got {gamma}")
    self.n_components = int(n_components)
    self.kernel = kernel
    self.mu = float(mu)
    self.gamma = gamma
    self.scale = scale
    self.normalize_rows = bool(normalize_rows)

  # -- fit helpers
  def _prepare(self, xs, xt, what: str) -> np.ndarray:
    check_domains(xs, xt, what=what)
    xs, xt = _as_2d(xs, "xs"), _as_2d(xt, "xt")
    x = np.concatenate([xs, xt])
    if not np.any(np.ptp(x, axis=0) > 0):
      raise ValueError(f"{type(self).__name__} needs inputs that vary: every "
                       "source and target example is the same vector (the "
                       "inputs are constant). Check the features.")
    x64 = x.astype(np.float64)
    self._n_source = len(xs)
    self._d = x.shape[1]
    if self.kernel == "rbf":
      var = float(x64.var())
      self.gamma_ = (self.gamma if self.gamma is not None
                     else 1.0 / (x.shape[1] * var))
      # The kernel is translation invariant: centring only helps float32.
      self._offset = x64.mean(0)
      self.input_scale_ = 1.0
      self._x_fit = (x64 - self._offset).astype(np.float32)
      self._x64 = self._basis = self._problem = None
    else:
      self.gamma_ = None
      self._offset = None
      # K = X X^T / s has unit mean diagonal: mu is scale-free.
      self.input_scale_ = float(np.sqrt(np.mean(np.sum(x64 ** 2, axis=1))))
      self._x64 = x64 / self.input_scale_
      self._basis = _linear_basis(self._x64)
      self._problem = _linear_problem(self._x64, self._basis,
                                      self.kernel == "primal")
      self._x_fit = None
    return x

  def _solve(self, e: np.ndarray):
    """Solves for the MMD factor ``e`` and stores components and scales."""
    if self.kernel == "rbf":
      m = min(self.n_components, len(e))
      lam, w = _fit_dense(jnp.asarray(self._x_fit), jnp.asarray(e, jnp.float32),
                          self.gamma_, self.mu, kernel="rbf", m=m)
      lam, w = np.asarray(lam, np.float64), np.asarray(w, np.float64)
      coef, proj = w, None
    else:
      lam, coef, proj = _fit_linear(self._x64, self._basis, self._problem, e,
                                    self.mu, self.n_components,
                                    primal=self.kernel == "primal")
    if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(coef))):
      raise FloatingPointError(
          f"{type(self).__name__}'s eigensolver returned NaN or Inf "
          f"(kernel={self.kernel!r}, mu={self.mu}, {len(e)} points); the "
          "normalised problem should not do that: please report it with the "
          "input shapes and scale.")
    keep = lam > max(lam[0], 0.0) * _KEEP_RTOL
    if not keep.any():
      raise ValueError(
          f"{type(self).__name__} found no component with a positive "
          f"eigenvalue (largest {lam[0]:.3g}) although the inputs vary: K H K "
          f"is numerically zero for kernel={self.kernel!r}"
          + (f" with gamma={self.gamma_:.3g} (the kernel is constant: try a "
             "larger gamma)" if self.kernel == "rbf" else "") + ".")
    lam, coef = lam[keep], coef[:, keep]
    # eigh gives c^T A c = 1, hence c^T B c = lambda.
    if self.scale == "unit":
      fac = 1.0 / np.linalg.norm(coef, axis=0)
    elif self.scale == "whiten":
      fac = 1.0 / np.sqrt(lam)
    else:
      fac = np.ones_like(lam)
    coef = coef * fac
    if proj is not None:
      self._proj = (proj[:, keep] * fac).astype(np.float32)
      s, v = self._basis
      # A (primal, d x m) = V c, or W (dual, n x m) = U c = X V S^-1 c.
      self.components_ = (v @ coef if self.kernel == "primal"
                          else self._x64 @ ((v / s) @ coef))
    else:
      self._proj = None
      self.components_ = coef
    self.eigenvalues_ = lam
    self.n_components_ = int(lam.shape[0])

  def _embed(self, x: np.ndarray) -> np.ndarray:
    """Embedding of 2-D float32 inputs, before row normalisation."""
    if self._proj is not None:
      return np.asarray(jnp.asarray(x / np.float32(self.input_scale_))
                        @ jnp.asarray(self._proj))
    xf = jnp.asarray(self._x_fit)
    w = jnp.asarray(self.components_, jnp.float32)
    x = (x - self._offset).astype(np.float32)
    out = []
    for start in range(0, len(x), 2048):  # bound the k(x, X) block's memory
      kx = ops.gaussian_kernel(jnp.asarray(x[start:start + 2048]), xf,
                               gamma=self.gamma_)
      out.append(np.asarray(kx @ w))
    return (np.concatenate(out) if out
            else np.zeros((0, w.shape[1]), np.float32))

  def _finish(self, z: np.ndarray) -> np.ndarray:
    if self.normalize_rows:
      z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-30)
    return z.astype(np.float32)

  def transform(self, x) -> np.ndarray:
    """Embeds source, target or new points: ``k(x, X_fit) W`` (or ``x A``).

    Args:
      x: ``(n, ...)`` inputs with the same feature shape as in ``fit``.

    Returns:
      ``(n, n_components_)`` float32 embedding, rows of unit norm when
      ``normalize_rows``.

    Raises:
      ValueError: if called before ``fit``, or on a feature-shape mismatch
        or NaN.
    """
    name = type(self).__name__
    if not hasattr(self, "components_"):
      raise ValueError(f"call {name}.fit(...) before transform")
    x = _as_2d(x, "x")
    if x.shape[1] != self._d:
      raise ValueError(f"transform got {x.shape[1]} features per example but "
                       f"{name} was fitted on {self._d}; pass inputs "
                       "from the same feature space.")
    if not np.all(np.isfinite(x)):
      raise ValueError("transform input contains NaN or Inf; clean it first.")
    return self._finish(self._embed(x))


class TCA(_Subspace):
  """Transfer Component Analysis (Pan et al., 2011); see the module doc.

  Defaults: linear kernel, 30 components, ``mu = 1``, ``scale="mmd"``, no
  row normalisation; on COIL-20 they beat the JDA paper's TCA row, and
  ``TCA(100, "primal", 0.1, scale="unit", normalize_rows=True)`` is the
  protocol of Long et al.'s code (``docs/results_coil.md``).

  Args:
    n_components: ``m``, the number of transfer components. Capped at the
      number of components with a positive eigenvalue (at most the rank of
      ``K H K``), which ``n_components_`` reports after ``fit``.
    kernel: ``linear``, ``rbf`` (Gaussian) or ``primal`` (linear projection
      of the inputs, Long et al.'s form).
    mu: the trade-off ``mu > 0`` between ``tr(W^T W)`` and the normalised
      MMD term (see the module doc).
    gamma: the ``rbf`` kernel's ``exp(-gamma ||x - y||^2)``; default
      ``1 / (d * var(X))`` of the pooled training data.
    scale: the eigenvectors' scale, ``unit``, ``mmd`` or ``whiten``.
    normalize_rows: scale each embedded row to unit L2 norm.
    whiten: ``True`` is the older spelling of ``scale="whiten"``.

  Attributes (after ``fit``):
    components_: ``W``, ``(n, m)`` (or ``A``, ``(d, m)``, for ``primal``).
    eigenvalues_: the ``m`` leading generalized eigenvalues.
    n_components_: the number kept.
    gamma_: the rbf gamma used (``None`` for the linear kernels).
    input_scale_: ``sqrt(mean ||x||^2)`` the linear kernels divide by.
  """

  def __init__(self, n_components: int = 30, kernel: str = "linear",
               mu: float = 1.0, gamma: float | None = None, *,
               scale: str = "mmd", normalize_rows: bool = False,
               whiten: bool | None = None):
    super().__init__(n_components, kernel, mu, gamma, scale, normalize_rows,
                     whiten)

  def fit(self, xs, xt) -> "TCA":
    """Learns the transfer components from source ``xs`` and target ``xt``.

    Args:
      xs: ``(n_s, ...)`` source inputs (flattened per example).
      xt: ``(n_t, ...)`` target inputs, unlabelled.

    Returns:
      ``self``.

    Raises:
      ValueError: if the feature shapes differ, a domain is empty, an input
        holds NaN or Inf, or every example is the same.
    """
    x = self._prepare(xs, xt, "TCA inputs")
    self._solve(mmd_factor(self._n_source, len(x) - self._n_source))
    self._x64 = self._basis = self._problem = None  # not needed now
    return self


class JDA(_Subspace):
  """Joint Distribution Adaptation (Long et al., 2013); see the module doc.

  TCA's marginal MMD plus one class-conditional MMD term per class, over
  target pseudo-labels that 1-NN assigns in the previous embedding (none in
  the first of the ``iterations`` solves). The defaults are the paper's and
  its code's (``k = 100``, ``lambda = 0.1``, primal, ``T = 10``), which
  reproduce its COIL-20 row (``docs/results_coil.md``).

  Args:
    n_components: ``k``, the embedding's dimension.
    kernel: ``primal`` (the paper's linear projection), ``linear`` or
      ``rbf`` (dual forms).
    mu: the regulariser ``lambda > 0`` of ``||A||^2``.
    iterations: ``T``, the number of solves (pseudo-labels refreshed after
      each); ``1`` is TCA with the marginal term.
    gamma: the ``rbf`` kernel width; default ``1 / (d * var(X))``.
    scale: the eigenvectors' scale, ``unit``, ``mmd`` or ``whiten``.
    normalize_rows: scale each embedded row to unit L2 norm (also for the
      1-NN that assigns the pseudo-labels).

  Attributes (after ``fit``):
    components_, eigenvalues_, n_components_, gamma_, input_scale_: as in
      :class:`TCA`, of the last solve.
    target_labels_: the 1-NN labels of the target after the last solve.
    pseudo_label_history_: the target labels after each solve.
  """

  def __init__(self, n_components: int = 100, kernel: str = "primal",
               mu: float = 0.1, iterations: int = 10,
               gamma: float | None = None, *, scale: str = "unit",
               normalize_rows: bool = True):
    super().__init__(n_components, kernel, mu, gamma, scale, normalize_rows,
                     None)
    if not iterations >= 1:
      raise ValueError(f"iterations must be >= 1, got {iterations}")
    self.iterations = int(iterations)

  def fit(self, xs, ys, xt) -> "JDA":
    """Learns the embedding from labelled source and unlabelled target.

    Args:
      xs: ``(n_s, ...)`` source inputs.
      ys: ``(n_s,)`` source labels.
      xt: ``(n_t, ...)`` target inputs, unlabelled.

    Returns:
      ``self``.

    Raises:
      ValueError: as :meth:`TCA.fit`, or if ``ys`` does not give one label
        per source example.
    """
    ys = np.asarray(ys)
    if ys.shape != (np.shape(xs)[0],):
      raise ValueError(f"ys must hold one label per source example, shape "
                       f"({np.shape(xs)[0]},); got {ys.shape}.")
    x = self._prepare(xs, xt, "JDA inputs")
    ns, nt = self._n_source, len(x) - self._n_source
    pseudo, history = None, []
    for _ in range(self.iterations):
      self._solve(mmd_factor(ns, nt, ys if pseudo is not None else None,
                             pseudo))
      z = self._finish(self._embed(x))
      pseudo = one_nn_predict(z[:ns], ys, z[ns:])
      history.append(pseudo)
    self.target_labels_ = pseudo
    self.pseudo_label_history_ = history
    self._x64 = self._basis = self._problem = None
    return self


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


def embedding_accuracies(tca, xs, ys, x_eval, y_eval, *,
                         classifiers: Sequence[str] = ("1nn",)) -> dict:
  """Accuracy on ``(x_eval, y_eval)`` of each classifier trained on the
  fitted ``tca``'s (or ``JDA``'s) embedding of the labelled source
  ``(xs, ys)``, and of the same classifier on the raw inputs (the baseline
  the embedding must beat).

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
