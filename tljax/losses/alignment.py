"""Domain alignment losses: MMD (single and multi-kernel), CORAL, the domain
classifier's loss, CDAN's multilinear maps and entropy weights, minimum
class confusion, and confident pseudo-labels.

All are pure functions of arrays, differentiable in both inputs, and usable
under ``jit``, ``pmap`` and a sharded mesh. Under ``pmap`` gather the global
batch first (``jax.lax.all_gather(f, axis_name, tiled=True)``) if the value
must equal the single-device one; :mod:`tljax.methods.domain_adaptation` does.

  >>> import jax.numpy as jnp
  >>> xs = jnp.zeros((4, 2)); xt = jnp.ones((4, 2))
  >>> round(float(gaussian_mmd2(xs, xt, gamma=0.5)), 4)  # 2 - 2 exp(-1)
  1.2642
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tljax import ops
from tljax.losses.classification import weighted_mean


def check_domains(source, target, *, what: str = "features",
                  min_examples: int = 1):
  """Raises one clear ``ValueError`` if two domains cannot be compared.

  Checks that both have the example axis first and the same trailing
  (feature) shape, that each has at least ``min_examples`` rows, and, for
  concrete (non-traced) arrays, that neither holds NaN or Inf. Shapes are
  checked at trace time too, so a jitted loss fails before XLA does.

  Args:
    source: ``(n_s, ...)`` array.
    target: ``(n_t, ...)`` array.
    what: what the arrays are, for the message.
    min_examples: the fewest rows each domain may have.

  Raises:
    ValueError: naming the domain and what to do.
  """
  for name, x in (("source", source), ("target", target)):
    if np.ndim(x) < 2:
      raise ValueError(f"{name} {what} must have the example axis first, "
                       f"shape (n, d, ...); got shape {np.shape(x)}. Reshape "
                       "a single example with x[None].")
    if np.shape(x)[0] < min_examples:
      raise ValueError(
          f"{name} {what} have {np.shape(x)[0]} examples but at least "
          f"{min_examples} are needed; an empty domain cannot be aligned. "
          "Pass a non-empty batch for both domains.")
  if np.shape(source)[1:] != np.shape(target)[1:]:
    raise ValueError(
        f"source and target {what} differ in shape: source {np.shape(source)}"
        f" vs target {np.shape(target)} (examples first). Both domains must "
        "live in the same feature space; project or pad them to one "
        "dimension first.")
  for name, x in (("source", source), ("target", target)):
    if not isinstance(x, jax.core.Tracer) and not np.all(
        np.isfinite(np.asarray(x))):
      raise ValueError(f"{name} {what} contain NaN or Inf; clean or impute "
                       "them before adapting.")


def _flat(x):
  return jnp.reshape(x, (x.shape[0], -1))


def _mmd2_from_kernel(k: jax.Array, ns: int, unbiased: bool) -> jax.Array:
  """MMD^2 from the pooled kernel matrix (source rows first)."""
  kss, ktt, kst = k[:ns, :ns], k[ns:, ns:], k[:ns, ns:]
  nt = k.shape[0] - ns
  if unbiased:
    if ns < 2 or nt < 2:
      raise ValueError("the unbiased MMD estimate needs at least 2 examples "
                       f"per domain; got {ns} source and {nt} target.")
    sss = (jnp.sum(kss) - jnp.trace(kss)) / (ns * (ns - 1))
    stt = (jnp.sum(ktt) - jnp.trace(ktt)) / (nt * (nt - 1))
  else:
    sss, stt = jnp.mean(kss), jnp.mean(ktt)
  return sss + stt - 2.0 * jnp.mean(kst)


def gaussian_mmd2(source: jax.Array, target: jax.Array, *,
                  gamma: float | Sequence[float] | jax.Array = 1.0,
                  kernel_weights: Sequence[float] | jax.Array | None = None,
                  unbiased: bool = False) -> jax.Array:
  """Squared MMD with a (mixture of) Gaussian kernel(s).

  ``MMD^2 = E k(s, s') + E k(t, t') - 2 E k(s, t)`` (Gretton et al., 2012)
  with ``k(x, y) = sum_u beta_u exp(-gamma_u ||x - y||^2)``, the
  multi-kernel form of DAN (Long et al., 2015, "Learning Transferable
  Features with Deep Adaptation Networks"). A scalar ``gamma`` is the single
  kernel.

  Args:
    source: ``(n_s, ...)`` source features (flattened per example).
    target: ``(n_t, ...)`` target features.
    gamma: one inverse bandwidth or a sequence of them.
    kernel_weights: ``beta_u`` for each gamma (default equal, summing to 1).
    unbiased: drop the diagonal terms (the U-statistic; can be negative)
      instead of the biased V-statistic (always >= 0).

  Returns:
    A scalar.

  Raises:
    ValueError: on mismatched feature shapes, an empty domain or NaN.
  """
  check_domains(source, target)
  gammas = jnp.atleast_1d(jnp.asarray(gamma, jnp.float32))
  if kernel_weights is None:
    beta = jnp.full(gammas.shape, 1.0 / gammas.shape[0])
  else:
    beta = jnp.asarray(kernel_weights, jnp.float32)
    if beta.shape != gammas.shape:
      raise ValueError(f"kernel_weights has {beta.shape[0]} entries but there "
                       f"are {gammas.shape[0]} gammas; give one per kernel.")
  z = jnp.concatenate([_flat(source), _flat(target)], 0)
  d2 = ops.pairwise_sq_distances(z)
  k = jnp.einsum("u,uij->ij", beta, jnp.exp(-gammas[:, None, None] * d2))
  return _mmd2_from_kernel(k, source.shape[0], unbiased)


def dan_gammas(source: jax.Array, target: jax.Array, *,
               num_kernels: int = 5, kernel_mul: float = 2.0) -> jax.Array:
  """The DAN kernel family: bandwidths on a geometric grid around the data.

  The base bandwidth ``sigma^2`` is the mean pairwise squared distance of the
  pooled batch (no gradient flows through it); the kernels use
  ``sigma^2 * kernel_mul ** (u - num_kernels // 2)`` for
  ``u = 0..num_kernels-1``, i.e. ``gamma_u = 1 / that``. This is the common
  implementation of Long et al. (2015)'s multi-kernel MMD with equal weights.
  """
  if num_kernels < 1:
    raise ValueError(f"num_kernels must be >= 1, got {num_kernels}")
  z = jnp.concatenate([_flat(source), _flat(target)], 0)
  n = z.shape[0]
  d2 = jax.lax.stop_gradient(ops.pairwise_sq_distances(z))
  sigma2 = jnp.sum(d2) / jnp.maximum(n * n - n, 1)
  sigma2 = jnp.maximum(sigma2, 1e-8)
  powers = jnp.arange(num_kernels, dtype=jnp.float32) - num_kernels // 2
  return 1.0 / (sigma2 * kernel_mul ** powers)


def multi_kernel_mmd2(source: jax.Array, target: jax.Array, *,
                      num_kernels: int = 5, kernel_mul: float = 2.0,
                      unbiased: bool = False) -> jax.Array:
  """DAN's multi-kernel MMD^2 with bandwidths from :func:`dan_gammas`.

  Long et al. (2015), "Learning Transferable Features with Deep Adaptation
  Networks": equal-weight mixture of Gaussian kernels whose bandwidths are
  multiples of the batch's mean squared distance.

  Args:
    source: ``(n_s, ...)`` source features.
    target: ``(n_t, ...)`` target features.
    num_kernels: number of Gaussian kernels.
    kernel_mul: ratio between neighbouring bandwidths.
    unbiased: see :func:`gaussian_mmd2`.

  Returns:
    A scalar.
  """
  check_domains(source, target)
  gammas = dan_gammas(source, target, num_kernels=num_kernels,
                      kernel_mul=kernel_mul)
  return gaussian_mmd2(source, target, gamma=gammas, unbiased=unbiased)


def covariance(x: jax.Array) -> jax.Array:
  """Unbiased feature covariance ``(d, d)`` of ``x: (n, d)``, ``n >= 2``."""
  x = _flat(x)
  xc = x - jnp.mean(x, 0, keepdims=True)
  return xc.T @ xc / (x.shape[0] - 1)


def coral_loss(source: jax.Array, target: jax.Array) -> jax.Array:
  """Deep CORAL: ``||C_s - C_t||_F^2 / (4 d^2)``.

  Sun & Saenko (2016), "Deep CORAL: Correlation Alignment for Deep Domain
  Adaptation", eq. (1), with ``C`` the unbiased covariance of each domain's
  ``d``-dimensional features.

  Args:
    source: ``(n_s, d)`` source features, ``n_s >= 2``.
    target: ``(n_t, d)`` target features, ``n_t >= 2``.

  Returns:
    A scalar.

  Raises:
    ValueError: on mismatched shapes, fewer than 2 examples, or NaN.
  """
  check_domains(source, target, min_examples=2)
  d = int(np.prod(np.shape(source)[1:]))
  diff = covariance(source) - covariance(target)
  return jnp.sum(diff * diff) / (4.0 * d * d)


def _logit_vector(logits, name):
  logits = jnp.asarray(logits)
  if logits.ndim == 2 and logits.shape[1] == 1:
    logits = logits[:, 0]
  if logits.ndim != 1:
    raise ValueError(f"{name} domain logits must have shape (n,) or (n, 1) "
                     f"(one logit: target vs source); got {logits.shape}.")
  return logits


def domain_classification_loss(source_logits: jax.Array,
                               target_logits: jax.Array, *,
                               source_weights: jax.Array | None = None,
                               target_weights: jax.Array | None = None,
                               axis_name: str | None = None
                               ) -> jax.Array:
  """Binary cross-entropy of the domain classifier (DANN's ``L_d``).

  Ganin et al. (2016), "Domain-Adversarial Training of Neural Networks",
  eq. (9)-(10): domain label 0 for source, 1 for target; the mean over the
  source and target terms, each averaged over its own batch.

  Args:
    source_logits: ``(n_s,)`` or ``(n_s, 1)`` logits of P(target).
    target_logits: ``(n_t,)`` or ``(n_t, 1)``.
    source_weights: optional per-example weights of the source terms
      (e.g. KMM weights); averaged as ``sum(w l) / sum(w)``.
    target_weights: the same for the target terms (CDAN+E's entropy
      weights).
    axis_name: under ``pmap``, weighted means over the global batch (see
      :func:`tljax.losses.weighted_mean`).

  Returns:
    A scalar.
  """
  ls = _logit_vector(source_logits, "source")
  lt = _logit_vector(target_logits, "target")
  bce_s = optax.sigmoid_binary_cross_entropy(ls, jnp.zeros_like(ls))
  bce_t = optax.sigmoid_binary_cross_entropy(lt, jnp.ones_like(lt))
  return 0.5 * (weighted_mean(bce_s, source_weights, axis_name=axis_name)
                + weighted_mean(bce_t, target_weights, axis_name=axis_name))


def domain_accuracy(source_logits: jax.Array, target_logits: jax.Array
                    ) -> jax.Array:
  """Balanced accuracy of the domain classifier (0.5 = cannot tell apart)."""
  ls = _logit_vector(source_logits, "source")
  lt = _logit_vector(target_logits, "target")
  return 0.5 * (jnp.mean(ls < 0) + jnp.mean(lt > 0))


def entropy(probs: jax.Array, *, eps: float = 1e-5) -> jax.Array:
  """Shannon entropy ``-sum_c p_c log p_c`` of each row of ``probs``
  ``(n, C)``, in nats; ``eps`` inside the log keeps it finite at 0."""
  return -jnp.sum(probs * jnp.log(probs + eps), axis=-1)


def multilinear_map(features: jax.Array, probs: jax.Array) -> jax.Array:
  """CDAN's multilinear map ``f ⊗ g``: the flattened outer product of each
  example's features ``(n, d)`` and class probabilities ``(n, C)``,
  ``(n, d * C)`` with entry ``[i, a * C + c] = f[i, a] g[i, c]``.

  Long et al. (2018), "Conditional Adversarial Domain Adaptation", NeurIPS,
  eq. (4).
  """
  f, g = _flat(features), _flat(probs)
  return jnp.einsum("na,nc->nac", f, g).reshape(f.shape[0], -1)


def randomized_multilinear_map(features: jax.Array, probs: jax.Array, *,
                               dim: int = 1024, seed: int = 0) -> jax.Array:
  """CDAN's randomized multilinear map ``(R_f f) ⊙ (R_g g) / sqrt(dim)``.

  Long et al. (2018), eq. (5): ``R_f (d, dim)`` and ``R_g (C, dim)`` are
  fixed standard Gaussian matrices (drawn from ``seed``, never trained);
  its inner products approximate those of :func:`multilinear_map` in
  expectation, at ``dim`` instead of ``d * C`` entries.
  """
  f, g = _flat(features), _flat(probs)
  kf, kg = jax.random.split(jax.random.key(seed))
  rf = jax.random.normal(kf, (f.shape[1], dim), f.dtype)
  rg = jax.random.normal(kg, (g.shape[1], dim), g.dtype)
  return (f @ rf) * (g @ rg) / jnp.sqrt(jnp.asarray(dim, f.dtype))


def cdan_entropy_weights(probs: jax.Array) -> jax.Array:
  """CDAN+E's example weights ``w = 1 + exp(-H(g))`` (Long et al., 2018,
  eq. (9)): confident predictions weigh up to 2, uniform ones close to 1.
  No gradient flows through them."""
  return jax.lax.stop_gradient(1.0 + jnp.exp(-entropy(probs)))


def mcc_loss(logits: jax.Array, *, temperature: float = 2.5) -> jax.Array:
  """Minimum Class Confusion on (target) logits ``(n, C)``.

  Jin et al. (2020), "Minimum Class Confusion for Versatile Domain
  Adaptation", ECCV, eqs. (1)-(7): probabilities at temperature ``T``,
  ``Y = softmax(z / T)``; example weights ``W = n (1 + exp(-H(Y))) /
  sum(1 + exp(-H(Y)))`` (no gradient); class correlations ``C = Y^T diag(W)
  Y``; category normalisation, each row divided by its sum; the loss is the
  sum of the off-diagonal entries divided by ``C``.

  Args:
    logits: ``(n, C)`` class logits of a target batch.
    temperature: the temperature ``T`` (the paper's default 2.5).

  Returns:
    A scalar in ``[0, C - 1) / C``; 0 when every prediction is one-hot.
  """
  logits = jnp.asarray(logits)
  if logits.ndim != 2 or logits.shape[0] < 1:
    raise ValueError(f"mcc_loss needs logits of shape (n, num_classes) with "
                     f"n >= 1; got {logits.shape}.")
  if not temperature > 0:
    raise ValueError(f"mcc temperature must be > 0, got {temperature}")
  n, c = logits.shape
  y = jax.nn.softmax(logits / temperature, axis=-1)
  w = 1.0 + jnp.exp(-jax.lax.stop_gradient(entropy(y)))
  w = n * w / jnp.sum(w)
  conf = (y * w[:, None]).T @ y
  conf = conf / jnp.sum(conf, axis=1, keepdims=True)
  return (jnp.sum(conf) - jnp.trace(conf)) / c


def confident_pseudo_labels(logits: jax.Array, *, threshold: float = 0.9,
                            distribution_alignment: bool = False,
                            axis_name: str | None = None
                            ) -> tuple[jax.Array, jax.Array]:
  """``(labels, mask)``: the arg-max class of each row of ``logits`` and
  whether its softmax probability reaches ``threshold``; both without
  gradient (Lee, 2013, "Pseudo-Label"; the confidence mask as in FixMatch,
  Sohn et al., 2020).

  With ``distribution_alignment``, the probabilities are first divided by
  their mean over the (global) batch and renormalised, i.e. aligned to a
  uniform class prior (ReMixMatch's distribution alignment, Berthelot et
  al., 2020, sec. 3.2, with the batch mean as the running average): a
  source model that sends most shifted target examples to a few classes
  then no longer turns that bias into confident pseudo-labels.
  """
  p = jax.nn.softmax(jax.lax.stop_gradient(logits), axis=-1)
  if distribution_alignment:
    mean = jnp.mean(p, axis=0, keepdims=True)
    if axis_name is not None:
      mean = jax.lax.pmean(mean, axis_name)
    p = p / jnp.maximum(mean, 1e-12)
    p = p / jnp.sum(p, axis=-1, keepdims=True)
  return jnp.argmax(p, -1), (jnp.max(p, -1) >= threshold).astype(p.dtype)
