"""Kernel Mean Matching (KMM): instance weights for source examples.

Huang, Smola, Gretton, Borgwardt & Schoelkopf (2007), "Correcting Sample
Selection Bias by Unlabeled Data" (NIPS). Weights ``beta`` make the weighted
source kernel mean match the target's, by the quadratic program

    min_beta  1/2 beta^T K beta - kappa^T beta
    s.t.      0 <= beta_i <= B,   |sum_i beta_i - n_s| <= n_s eps

with ``K_ij = k(x_i, x_j)`` over the source and
``kappa_i = n_s / n_t sum_j k(x_i, x'_j)`` against the target. ``B`` bounds
how much one example may count; ``eps`` how far the weights' mean may stray
from 1 (the paper suggests ``eps = (sqrt(n_s) - 1) / sqrt(n_s)``).

Solver: accelerated projected gradient (FISTA; Beck & Teboulle, 2009) in JAX,
step ``1/L`` with ``L`` the largest absolute row sum of ``K`` (a bound on its
largest eigenvalue), and the exact Euclidean projection onto
``{0 <= beta <= B, |sum beta - n_s| <= n_s eps}`` found by bisection on the
multiplier of the sum constraint (``beta = clip(v - tau, 0, B)``). It uses
``O(n_s^2 + n_s n_t)`` memory (the kernel matrices) and ``O(n_s^2)`` time per
iteration; it is checked against scipy's SLSQP in ``tests/test_kmm.py``.

The weights are then per-example loss weights: ``batch['w']`` in
:mod:`tljax.methods.domain_adaptation` (``method=kmm`` in
``experiments/adapt.py``).

  >>> import numpy as np
  >>> rng = np.random.default_rng(0)
  >>> xs = rng.normal(size=(100, 1)); xt = rng.normal(1.0, 0.5, size=(80, 1))
  >>> w = kmm_weights(xs, xt)
  >>> bool(w[xs[:, 0] > 1].mean() > w[xs[:, 0] < 0].mean())
  True
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tljax import ops
from tljax.losses.alignment import check_domains


def project_box_sum(v: jax.Array, upper: float, lo: float, hi: float, *,
                    iters: int = 60) -> jax.Array:
  """Euclidean projection of ``v`` onto ``{0 <= b <= upper, lo <= sum b <= hi}``.

  The KKT conditions give ``b = clip(v - tau, 0, upper)`` for one scalar
  ``tau`` (0 if the sum constraint is inactive); ``sum b`` is monotone in
  ``tau``, so bisection finds it.
  """
  clipped = jnp.clip(v, 0.0, upper)
  s = jnp.sum(clipped)
  target = jnp.where(s > hi, hi, lo)

  def total(tau):
    return jnp.sum(jnp.clip(v - tau, 0.0, upper))

  def body(_, bounds):
    a, b = bounds  # total(a) >= target >= total(b)
    mid = 0.5 * (a + b)
    above = total(mid) >= target
    return jnp.where(above, mid, a), jnp.where(above, b, mid)

  a0 = jnp.min(v) - upper - 1.0
  b0 = jnp.max(v) + 1.0
  a, b = jax.lax.fori_loop(0, iters, body, (a0, b0))
  tau = 0.5 * (a + b)
  projected = jnp.clip(v - tau, 0.0, upper)
  return jnp.where((s >= lo) & (s <= hi), clipped, projected)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _solve(k, kappa, upper, lo, hi, *, max_iter: int):
  lip = jnp.maximum(jnp.max(jnp.sum(jnp.abs(k), axis=1)), 1e-12)
  n = k.shape[0]
  beta0 = project_box_sum(jnp.ones((n,), k.dtype), upper, lo, hi)

  def body(_, carry):
    beta, z, t = carry
    grad = k @ z - kappa
    new = project_box_sum(z - grad / lip, upper, lo, hi)
    t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
    z_new = new + ((t - 1.0) / t_new) * (new - beta)
    return new, z_new, t_new

  beta, _, _ = jax.lax.fori_loop(0, max_iter, body,
                                 (beta0, beta0, jnp.ones((), k.dtype)))
  return beta


def kmm_weights(xs, xt, *, kernel: str = "rbf", gamma: float | None = None,
                B: float = 1000.0, eps: float | None = None,
                max_iter: int = 2000) -> np.ndarray:
  """KMM importance weights of the source examples (Huang et al., 2007).

  Args:
    xs: ``(n_s, ...)`` source inputs or features (flattened per example).
    xt: ``(n_t, ...)`` target inputs or features.
    kernel: ``rbf`` (``exp(-gamma ||x - y||^2)``) or ``linear``.
    gamma: rbf width; default ``1 / (d * var)`` of the pooled data.
    B: upper bound on each weight.
    eps: slack of the mean-weight constraint; default
      ``(sqrt(n_s) - 1) / sqrt(n_s)``.
    max_iter: FISTA iterations.

  Returns:
    ``(n_s,)`` float32 weights in ``[0, B]`` with ``|mean - 1| <= eps``.

  Raises:
    ValueError: on mismatched feature shapes, an empty domain, NaN, or
      infeasible ``B``/``eps``.
  """
  check_domains(xs, xt, what="KMM inputs")
  if kernel not in ("rbf", "linear"):
    raise ValueError(f"unknown KMM kernel {kernel!r}; choose rbf or linear")
  xs = np.asarray(xs, np.float32).reshape(len(xs), -1)
  xt = np.asarray(xt, np.float32).reshape(len(xt), -1)
  ns, nt = len(xs), len(xt)
  if eps is None:
    eps = (np.sqrt(ns) - 1.0) / np.sqrt(ns)
  if not 0 <= eps:
    raise ValueError(f"eps must be >= 0, got {eps}")
  if not B >= 1.0 - eps or B <= 0:
    raise ValueError(f"B={B} is infeasible: the weights' mean must reach "
                     f"1 - eps = {1 - eps:.3g}, so B must be at least that.")
  if gamma is None:
    var = float(np.concatenate([xs, xt]).var())
    gamma = 1.0 / (xs.shape[1] * var if var > 0 else 1.0)
  if not gamma > 0:
    raise ValueError(f"gamma must be > 0, got {gamma}")
  a, b = jnp.asarray(xs), jnp.asarray(xt)
  if kernel == "rbf":
    k = ops.gaussian_kernel(a, a, gamma=gamma)
    kappa = ops.gaussian_kernel(a, b, gamma=gamma).sum(1) * (ns / nt)
  else:
    k = a @ a.T
    kappa = (a @ b.T).sum(1) * (ns / nt)
  beta = _solve(k, kappa, float(B), ns * (1.0 - eps), ns * (1.0 + eps),
                max_iter=int(max_iter))
  return np.asarray(beta, np.float32)
