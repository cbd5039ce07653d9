"""Transferability scores: which source model will transfer best, estimated
from its features or predictions on the labelled target examples, before any
fine-tuning; and two judges of a ranking.

Every score is a pure function of arrays, higher = better expected transfer:

=========  ===================================================================
leep       Nguyen, Hassner, Seeger & Archambeau (2020), "LEEP: A New Measure
           to Evaluate Transferability of Learned Representations", ICML.
           Log-likelihood of the target labels under the source model's
           predictions pushed through the empirical ``P(y | z)``; in
           ``(-inf, 0]``.
log_me     You, Liu, Wang & Long (2021), "LogME: Practical Assessment of
           Pre-trained Models for Transfer Learning", ICML. Log of the
           maximum evidence of a Bayesian linear regression of the one-hot
           labels on the features, per example, averaged over classes.
h_score    Bao, Li, Huang, Zhang, Zheng & Wu (2019), "An Information-
           Theoretic Approach to Transferability in Task Transfer Learning",
           ICIP. ``tr(cov(f)^-1 cov(E[f | y]))``; in ``[0, C - 1]``.
nce        Tran, Nguyen & Hassner (2019), "Transferability and Hardness of
           Supervised Classification Tasks", ICCV. Negative conditional
           entropy ``-H(Y | Z)`` of the target labels given the source
           model's hard labels; in ``[-log C, 0]``.
transrate  Huang, Huang, Rong, Yang & Wei (2022), "Frustratingly Easy
           Transferability Estimation", ICML. Coding rate of the features
           minus their mean class-conditional coding rate, in nats.
=========  ===================================================================

``leep`` and ``nce`` read the source model's predictions over its own
classes (so they need a source head); ``log_me``, ``h_score`` and
``transrate`` read backbone features only. The target classes are the
distinct values of ``target_labels`` (any non-negative integers; absent ids
are not classes).

Numerics: LogME's fixed point, the one iterative part, is one compiled
``lax.while_loop`` over all classes at once, in JAX's default (float32)
precision: at the fixed point the evidence is stationary in alpha and beta,
so float32 steps lose nothing that matters (it matches a float64 reference
to ~1e-6). Everything else runs in float64 numpy on the host: the
decomposition behind LogME, H-score's pseudo-inverse covariance and
TransRate's log determinants are ill conditioned in float32 (backbone
features are often nearly collinear: dead ReLUs, fewer examples than
dimensions, so covariance eigenvalues span more than float32's seven
digits), and LEEP and NCE are one-shot sums over at most a few thousand
rows, where compiling per input shape would cost more than the sums.

:func:`kendall_tau` and :func:`top1_hit` judge a ranking of candidate
sources by a score against their measured fine-tuned accuracies.

  >>> import numpy as np
  >>> rng = np.random.default_rng(0)
  >>> y = rng.integers(0, 3, 60)
  >>> good = np.eye(3)[y] * 3 + rng.normal(size=(60, 3))
  >>> noise = rng.normal(size=(60, 3))
  >>> bool(log_me(good, y) > log_me(noise, y))
  True
  >>> round(leep(np.eye(3)[y], y), 6)
  0.0
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SCORES = ("leep", "log_me", "h_score", "nce", "transrate")


# ------------------------------------------------------------ validation
def _labels(labels, n: int | None, what: str) -> tuple[np.ndarray, int]:
  """Labels as class indices ``0..C-1`` (of the distinct values), and C."""
  y = np.asarray(labels)
  if y.ndim != 1 or y.size == 0:
    raise ValueError(f"{what} must be a non-empty 1-D array of class labels, "
                     f"got shape {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{what} must hold integer class labels, got dtype "
                     f"{y.dtype}")
  if n is not None and len(y) != n:
    raise ValueError(f"{what} has {len(y)} entries but there are {n} "
                     "examples; pass one label per example")
  if (y < 0).any():
    raise ValueError(f"{what} must be >= 0, got {int(y.min())}")
  classes, index = np.unique(y, return_inverse=True)
  return index.astype(np.int32), len(classes)


def _matrix(x, what: str, min_rows: int = 1) -> np.ndarray:
  """A finite 2-D ``(n, d)`` float64 array, or one clear ValueError."""
  a = np.asarray(x)
  if a.ndim != 2 or a.shape[0] < min_rows or a.shape[1] < 1:
    raise ValueError(f"{what} must have shape (n, d) with n >= {min_rows} "
                     f"and d >= 1 (flatten per-example axes first), got "
                     f"{a.shape}")
  if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
    raise ValueError(f"{what} must be real numbers, got dtype {a.dtype}")
  a = a.astype(np.float64)
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{what} contains NaN or Inf "
                     f"({int((~np.isfinite(a)).sum())} entries)")
  return a


def _probabilities(p, what: str = "source_probs") -> np.ndarray:
  a = _matrix(p, what)
  if (a < 0).any() or not np.allclose(a.sum(1), 1.0, atol=1e-3):
    raise ValueError(f"{what} must be probabilities (non-negative rows that "
                     "sum to 1, e.g. jax.nn.softmax(logits)), got row sums in "
                     f"[{a.sum(1).min():.4g}, {a.sum(1).max():.4g}] and "
                     f"minimum {a.min():.4g}")
  return a


def _joint(y: np.ndarray, c: int, theta: np.ndarray):
  """Empirical ``P(y, z)`` ``(C, Z)`` and ``P(y | z)`` (0 where P(z) = 0)."""
  joint = np.zeros((c, theta.shape[1]))
  np.add.at(joint, y, theta)
  joint /= len(y)
  p_z = joint.sum(0, keepdims=True)
  return joint, joint / np.where(p_z > 0, p_z, 1.0)


# ------------------------------------------------------------------ LEEP


def leep(source_probs, target_labels) -> float:
  """Log Expected Empirical Prediction (Nguyen et al., 2020, eq. 2).

  With the source model's predictions ``theta_i = P_source(z | x_i)`` over
  its ``Z`` classes, the empirical joint ``P(y, z) = 1/n sum_{i: y_i = y}
  theta_iz`` and ``P(y | z) = P(y, z) / P(z)``:
  ``LEEP = 1/n sum_i log sum_z P(y_i | z) theta_iz``.

  Args:
    source_probs: ``(n, Z)`` source-model probabilities (softmax of the
      source head's logits) on the labelled target examples.
    target_labels: ``(n,)`` integer target labels.

  Returns:
    LEEP in ``(-inf, 0]``; higher = better transfer. A source whose
    predictions determine the target label gives 0.

  Raises:
    ValueError: if ``source_probs`` is not a finite ``(n, Z)`` array of
      probability rows, or the labels are not ``n`` non-negative integers.

    >>> round(leep(np.full((4, 2), 0.5), np.array([0, 1, 0, 1])), 4)
    -0.6931
  """
  theta = _probabilities(source_probs)
  y, c = _labels(target_labels, len(theta), "target_labels")
  _, cond = _joint(y, c, theta)
  # sum_z P(y_i | z) theta_iz, per example.
  eep = np.einsum("iz,iz->i", theta, cond[y])
  return float(np.mean(np.log(eep)))


# ------------------------------------------------------------------- NCE


def nce(source_labels_pred, target_labels) -> float:
  """Negative Conditional Entropy (Tran et al., 2019): ``-H(Y | Z)``.

  ``Z`` is the source model's hard label of each target example (its
  pseudo-label, the argmax of its predictions); ``H(Y | Z) = -sum_{y,z}
  P(y, z) log P(y | z)`` with the empirical joint over the ``n`` examples.

  Args:
    source_labels_pred: the source model's ``(n, Z)`` predictions
      (probabilities or logits; the argmax is taken), or its ``(n,)``
      integer pseudo-labels.
    target_labels: ``(n,)`` integer target labels.

  Returns:
    NCE in ``[-log C, 0]``; higher = better transfer; 0 when the source
    label determines the target label.

  Raises:
    ValueError: on predictions that are not ``(n, Z)`` finite numbers or
      ``(n,)`` non-negative integers, or on bad target labels.

    >>> nce(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))
    0.0
  """
  s = np.asarray(source_labels_pred)
  if s.ndim == 2:
    s = _matrix(s, "source_labels_pred").argmax(1)
  elif s.ndim != 1:
    raise ValueError("source_labels_pred must be (n, Z) predictions or (n,) "
                     f"integer pseudo-labels, got shape {s.shape}")
  z, nz = _labels(s, None, "source_labels_pred (pseudo-labels)")
  y, c = _labels(target_labels, len(z), "target_labels")
  joint, cond = _joint(y, c, np.eye(nz)[z])
  # sum_{y,z} P(y, z) log P(y | z); terms with P(y, z) = 0 are 0.
  seen = joint > 0
  return float(np.sum(joint[seen] * np.log(cond[seen])))


# --------------------------------------------------------------- H-score
def h_score(features, labels, *, rcond: float = 1e-10) -> float:
  """H-score (Bao et al., 2019): ``tr(cov(f)^+ cov(E[f | y]))``.

  ``cov(f)`` is the ``(d, d)`` covariance of the features and
  ``cov(E[f | y])`` that of each example's class-mean feature. Computed in
  float64 with a pseudo-inverse (singular values below ``rcond`` times the
  largest dropped), since backbone features are often rank deficient.
  Invariant to any invertible linear map of the features (e.g. a
  permutation or rescaling of dimensions). With ``n - 1 <= d`` linearly
  independent examples it saturates at ``C - 1`` for every backbone: then
  it cannot tell candidates apart.

  Args:
    features: ``(n, d)`` backbone features of the labelled target examples,
      ``n >= 2``.
    labels: ``(n,)`` integer target labels.
    rcond: relative cut-off of the pseudo-inverse.

  Returns:
    The H-score, in ``[0, C - 1]`` (``C`` classes); higher = better.

  Raises:
    ValueError: on features that are not a finite ``(n, d)`` array with
      ``n >= 2``, or bad labels.

    >>> f = np.array([[0.], [1.], [4.], [5.]])
    >>> round(h_score(f, np.array([0, 0, 1, 1])), 4)
    0.9412
  """
  f = _matrix(features, "features", min_rows=2)
  y, c = _labels(labels, len(f), "labels")
  f = f - f.mean(0)
  means = np.zeros((c, f.shape[1]))
  np.add.at(means, y, f)
  means /= np.bincount(y, minlength=c)[:, None]
  g = means[y]
  n = len(f)
  cov_f = f.T @ f / (n - 1)
  cov_g = g.T @ g / (n - 1)
  return float(np.trace(np.linalg.pinv(cov_f, rcond=rcond,
                                       hermitian=True) @ cov_g))


# ----------------------------------------------------------------- LogME
@functools.partial(jax.jit, static_argnames=("max_iter",))
def _log_me_evidence(sigma, z2, res0, n, tol, *, max_iter):
  """Per class, the evidence / n at the fixed point of alpha and beta.

  ``sigma`` ``(d,)`` the eigenvalues of ``F^T F`` (zeros included), ``z2``
  ``(d, C)`` the squared projections of the one-hot labels on the matching
  left singular vectors (0 for zero eigenvalues), ``res0`` ``(C,)`` the
  labels' squared residual outside the span of ``F``.
  """
  tiny = jnp.finfo(sigma.dtype).tiny
  s = sigma[:, None]

  def terms(alpha, beta):
    t = alpha / beta                                  # (C,)
    gamma = jnp.sum(s / (s + t), 0)                   # effective parameters
    m2 = jnp.sum(s * z2 / (s + t) ** 2, 0)            # m^T m
    res2 = jnp.sum(z2 * (t / (s + t)) ** 2, 0) + res0  # ||F m - y||^2
    return gamma, m2, res2

  def body(carry):
    i, alpha, beta, done = carry
    gamma, m2, res2 = terms(alpha, beta)
    # m = 0 (features that carry nothing, e.g. all zero): alpha is moot.
    new_alpha = jnp.where(m2 > 0, gamma / jnp.maximum(m2, tiny), alpha)
    new_beta = (n - gamma) / jnp.maximum(res2, tiny)
    t, new_t = alpha / beta, new_alpha / new_beta
    alpha = jnp.where(done, alpha, new_alpha)
    beta = jnp.where(done, beta, new_beta)
    return i + 1, alpha, beta, done | (jnp.abs(new_t - t) <= tol * t)

  def cond(carry):
    i, _, _, done = carry
    return (i < max_iter) & ~jnp.all(done)

  ones = jnp.ones(z2.shape[1], sigma.dtype)
  _, alpha, beta, _ = jax.lax.while_loop(
      cond, body, (0, ones, ones, jnp.zeros(z2.shape[1], bool)))
  _, m2, res2 = terms(alpha, beta)
  d = sigma.shape[0]
  log_det_a = jnp.sum(jnp.log(alpha + beta * s), 0)  # all d eigenvalues
  evidence = (d / 2 * jnp.log(alpha) + n / 2 * jnp.log(beta)
              - log_det_a / 2 - beta / 2 * res2 - alpha / 2 * m2
              - n / 2 * jnp.log(2 * jnp.pi))
  return evidence / n


def log_me(features, target_labels, *, max_iter: int = 100,
           tol: float = 1e-5) -> float:
  """LogME (You et al., 2021): log of the maximum label evidence.

  For each class ``c`` the one-hot column ``y_c`` is regressed on the
  features ``F`` ``(n, d)`` with the prior ``w ~ N(0, alpha^-1 I)`` and
  noise ``N(0, beta^-1)``. The evidence

    L(alpha, beta) = n/2 log beta + d/2 log alpha - n/2 log 2 pi
                     - beta/2 ||F m - y_c||^2 - alpha/2 m^T m - 1/2 log|A|

  (``A = alpha I + beta F^T F``, ``m = beta A^-1 F^T y_c``) is maximised by
  the paper's fixed point ``gamma = sum_i beta s_i / (alpha + beta s_i)``,
  ``alpha <- gamma / m^T m``, ``beta <- (n - gamma) / ||F m - y_c||^2``
  (``s_i`` the eigenvalues of ``F^T F``), from ``alpha = beta = 1``, until
  ``alpha / beta`` changes by at most ``tol`` (relative) or after
  ``max_iter`` steps. As in the paper's fast version, one decomposition
  of ``F`` (float64, on the host: the SVD of ``F`` if ``n <= d``, else the
  eigendecomposition of ``F^T F``) turns every step into sums over its
  ``d`` eigenvalues, so all classes iterate together in one
  ``lax.while_loop``, compiled once per ``(d, C)``. The zero eigenvalues
  beyond ``min(n, d)`` are counted in ``log|A|`` (as ``log alpha``), so
  the evidence is exact for ``n < d`` too.

  Args:
    features: ``(n, d)`` backbone features of the labelled target examples,
      ``n >= 2``. Not normalised here (the paper uses raw features).
    target_labels: ``(n,)`` integer target labels.
    max_iter: most fixed-point steps.
    tol: relative change of ``alpha / beta`` that counts as converged.

  Returns:
    ``1/C sum_c L_c / n``; higher = better transfer.

  Raises:
    ValueError: on features that are not a finite ``(n, d)`` array with
      ``n >= 2``, bad labels, or ``max_iter < 1``.

    >>> rng = np.random.default_rng(1)
    >>> y = np.repeat([0, 1], 20)
    >>> f = rng.normal(size=(40, 4)) + 2 * y[:, None]
    >>> bool(log_me(f, y) > log_me(rng.normal(size=(40, 4)), y))
    True
  """
  f = _matrix(features, "features", min_rows=2)
  y, c = _labels(target_labels, len(f), "target_labels")
  if max_iter < 1:
    raise ValueError(f"max_iter must be >= 1, got {max_iter}")
  n, d = f.shape
  onehot = np.eye(c)[y]
  sigma, z2 = np.zeros(d), np.zeros((d, c))
  if n <= d:
    u, s, _ = np.linalg.svd(f, full_matrices=False)   # n x n work
    z = u.T @ onehot
    sigma[:n], z2[:n] = s ** 2, z ** 2
    res0 = np.sum((onehot - u @ z) ** 2, 0)           # no cancellation
  else:
    # d x d work. Eigenvalues below 1e-12 of the largest (singular values
    # below 1e-6 of the largest: noise for float32 features) count as 0.
    lam, v = np.linalg.eigh(f.T @ f)
    keep = lam > 1e-12 * max(lam.max(), 0.0)
    z = (v[:, keep].T @ (f.T @ onehot)) / np.sqrt(lam[keep])[:, None]
    sigma[:keep.sum()], z2[:keep.sum()] = lam[keep], z ** 2
    res0 = np.maximum(np.sum(onehot, 0) - np.sum(z ** 2, 0), 0.0)
  evidence = _log_me_evidence(
      jnp.asarray(sigma, jnp.float32), jnp.asarray(z2, jnp.float32),
      jnp.asarray(res0, jnp.float32), float(n), float(tol),
      max_iter=int(max_iter))
  return float(jnp.mean(evidence))


# ------------------------------------------------------------- TransRate
def _coding_rate(z: np.ndarray, eps: float) -> float:
  n, d = z.shape
  _, logdet = np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))
  return 0.5 * logdet


def transrate(features, labels, eps: float = 1e-4) -> float:
  """TransRate (Huang et al., 2022): ``R(Z, eps) - R(Z, eps | Y)``.

  With the features ``Z`` centred by their mean, the coding rate
  ``R(Z, eps) = 1/2 log det(I_d + Z^T Z / (n eps))`` and the class-
  conditional rate ``R(Z, eps | Y) = 1/C sum_c R(Z_c, eps)`` over the
  examples ``Z_c`` of each class (``n_c`` of them in its own rate). These
  are the forms of the authors' published code (the paper's appendix),
  whose ``eps`` stands for the paper's ``eps^2 / d``. Log determinants are
  float64 (``slogdet``): ``Z^T Z / (n eps)`` has a huge dynamic range.
  The score depends on the scale of the features (``eps`` is absolute), so
  compare candidates whose features have similar scales, or rescale them.

  Args:
    features: ``(n, d)`` backbone features of the labelled target examples,
      ``n >= 2``.
    labels: ``(n,)`` integer target labels.
    eps: distortion, ``> 0``.

  Returns:
    TransRate; higher = better transfer.

  Raises:
    ValueError: on features that are not a finite ``(n, d)`` array with
      ``n >= 2``, bad labels, or ``eps <= 0``.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 60)
    >>> good = np.eye(3)[y] * 3 + rng.normal(size=(60, 3))
    >>> bool(transrate(good, y) > transrate(rng.normal(size=(60, 3)), y))
    True
  """
  z = _matrix(features, "features", min_rows=2)
  y, c = _labels(labels, len(z), "labels")
  if not eps > 0:
    raise ValueError(f"eps must be > 0, got {eps}")
  z = z - z.mean(0)
  conditional = np.mean([_coding_rate(z[y == k], eps) for k in range(c)])
  return float(_coding_rate(z, eps) - conditional)


def scores(features, source_probs, target_labels) -> dict[str, float]:
  """Every score of :data:`SCORES` for one candidate source: ``leep`` and
  ``nce`` from ``source_probs`` ``(n, Z)``, the others from ``features``
  ``(n, d)``, all against ``target_labels`` ``(n,)``.

  Raises:
    ValueError: as the scores do, or if the two arrays differ in ``n``.
  """
  if len(np.asarray(features)) != len(np.asarray(source_probs)):
    raise ValueError(f"features and source_probs describe different numbers "
                     f"of examples: {len(np.asarray(features))} and "
                     f"{len(np.asarray(source_probs))}")
  return {"leep": leep(source_probs, target_labels),
          "log_me": log_me(features, target_labels),
          "h_score": h_score(features, target_labels),
          "nce": nce(source_probs, target_labels),
          "transrate": transrate(features, target_labels)}


# --------------------------------------------------- judging a ranking
def _vector(a, what: str) -> np.ndarray:
  try:
    v = np.asarray(a, np.float64)
  except (TypeError, ValueError):
    v = None
  if v is None or v.ndim != 1:
    raise ValueError(f"{what} must be a 1-D array of numbers, got "
                     f"{np.shape(a)}")
  if not np.all(np.isfinite(v)):
    raise ValueError(f"{what} contains NaN or Inf")
  return v


def _pair(a, b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
  a, b = _vector(a, names[0]), _vector(b, names[1])
  if len(a) != len(b) or len(a) < 2:
    raise ValueError(f"{names[0]} and {names[1]} must have the same length "
                     f">= 2 (one entry per candidate), got {len(a)} and "
                     f"{len(b)}")
  return a, b


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
  """Kendall's rank correlation (tau-b, ties allowed;
  ``scipy.stats.kendalltau``) between two scorings of the same candidates.

  Args:
    a, b: ``(k,)`` finite numbers, ``k >= 2``; e.g. a transferability score
      and the fine-tuned accuracy of each candidate.

  Returns:
    tau in ``[-1, 1]``: 1 when both order the candidates alike, -1 when
    reversed; NaN when either is constant (no order to compare).

  Raises:
    ValueError: on different lengths, fewer than 2 entries, or NaN/Inf.

    >>> round(kendall_tau([1, 2, 3], [10, 30, 20]), 4)
    0.3333
  """
  a, b = _pair(a, b, ("a", "b"))
  if np.all(a == a[0]) or np.all(b == b[0]):
    return float("nan")
  # Imported here: scipy.stats takes seconds to import, for this alone.
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.kendalltau(a, b).statistic)


def top1_hit(scores: Sequence[float],  # pylint: disable=redefined-outer-name
             accuracies: Sequence[float]) -> bool:
  """Whether the top-scored candidate is the best one after fine-tuning.

  A tie for the top score counts as a hit only if every tied candidate has
  the best accuracy (a tie picks none of them); a tie for the best accuracy
  lets any of the tied candidates be a hit.

  Args:
    scores: ``(k,)`` score per candidate (higher = predicted better).
    accuracies: ``(k,)`` fine-tuned accuracy per candidate.

  Returns:
    True on a hit.

  Raises:
    ValueError: on different lengths, fewer than 2 entries, or NaN/Inf.

    >>> top1_hit([0.1, 0.9, 0.5], [0.6, 0.8, 0.7])
    True
  """
  s, acc = _pair(scores, accuracies, ("scores", "accuracies"))
  return bool(np.all(acc[s == s.max()] == acc.max()))
