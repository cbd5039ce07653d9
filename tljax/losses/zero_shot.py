"""Zero-shot learning losses: attribute prediction and the hinge ranking loss.

Two ways to recognise classes never seen in training from a description of
each class (a vector of attributes):

- Attribute prediction (DAP; Lampert, Nickisch & Harmeling 2009/2014,
  "Attribute-Based Classification for Zero-Shot Visual Object
  Categorization"): one binary classifier per attribute, trained with
  :func:`attribute_loss` on the attribute signatures of the training classes.
- One embedding space for inputs and classes (DeViSE, Frome et al. 2013; ALE,
  Akata et al. 2015, "Label-Embedding for Image Classification"): the score of
  class ``y`` for input ``x`` is ``f(x) . g(a_y)``, trained with
  :func:`hinge_ranking_loss` so that the true class beats every other one by
  a margin.

  >>> import jax.numpy as jnp
  >>> scores = jnp.array([[2.0, 1.5, -1.0]])   # f(x) . g(y') for 3 classes
  >>> float(hinge_ranking_loss(scores, jnp.array([0]), margin=1.0))
  0.5
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

REDUCTIONS = ("max", "sum")


def hinge_ranking_loss(scores: jax.Array, labels: jax.Array, *,
                       margin: float = 1.0, reduction: str = "max"
                       ) -> jax.Array:
  """Hinge ranking loss of compatibility scores, one value per example.

  With ``reduction='max'`` (the structured-SVM form of ALE, Akata et al.
  2015, and of Weston et al. 2011's WSABIE at rank one) each example costs

      max(0, margin - s[y] + max_{y' != y} s[y'])

  and with ``reduction='sum'`` (DeViSE, Frome et al. 2013)

      sum_{y' != y} max(0, margin - s[y] + s[y']).

  Args:
    scores: ``(batch, num_classes)`` compatibilities ``f(x) . g(y')``.
    labels: ``(batch,)`` integer index of the true class of each row (values
      outside ``[0, num_classes)`` cannot be checked under ``jit``; keep them
      in range).
    margin: the margin ``k``.
    reduction: ``max`` or ``sum`` over the wrong classes.

  Returns:
    ``(batch,)`` per-example losses (reduce with
    :func:`tljax.losses.weighted_mean`).

  Raises:
    ValueError: on shapes that do not fit, fewer than two classes, or an
      unknown ``reduction``.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"hinge_ranking_loss: unknown reduction {reduction!r}; "
                     f"choose one of {REDUCTIONS}")
  if jnp.ndim(scores) != 2:
    raise ValueError(f"hinge_ranking_loss: scores must have shape (batch, "
                     f"num_classes); got {jnp.shape(scores)}.")
  n, c = jnp.shape(scores)
  if c < 2:
    raise ValueError(f"hinge_ranking_loss needs at least two classes to rank; "
                     f"scores have {c} column(s).")
  if jnp.shape(labels) != (n,):
    raise ValueError(f"hinge_ranking_loss: labels must have shape ({n},), one "
                     f"per row of scores; got {jnp.shape(labels)}.")
  if n == 0:
    raise ValueError("hinge_ranking_loss: the batch is empty.")
  true = jnp.take_along_axis(scores, labels[:, None], axis=1)  # (n, 1)
  wrong = jax.nn.one_hot(labels, c, dtype=bool) == 0
  if reduction == "max":
    other = jnp.max(jnp.where(wrong, scores, -jnp.inf), axis=1)
    per = jnp.maximum(0.0, margin - true[:, 0] + other)
  else:
    per = jnp.sum(jnp.where(wrong, jnp.maximum(0.0, margin - true + scores),
                            0.0), axis=1)
  return per


def attribute_loss(attribute_logits: jax.Array, attribute_targets: jax.Array
                   ) -> jax.Array:
  """Binary cross-entropy of per-attribute logits (DAP training), averaged
  over the attributes of each example.

  Each of the ``M`` attributes is its own binary classifier (Lampert et al.
  2009); targets are the attribute values of each example's class, in
  ``[0, 1]`` (soft values allowed).

  Args:
    attribute_logits: ``(batch, M)`` logits of ``p(a_m = 1 | x)``.
    attribute_targets: ``(batch, M)`` targets in ``[0, 1]``.

  Returns:
    ``(batch,)`` per-example losses.

  Raises:
    ValueError: if the shapes differ or are not ``(batch, M)``.
  """
  if jnp.ndim(attribute_logits) != 2 or (jnp.shape(attribute_logits)
                                         != jnp.shape(attribute_targets)):
    raise ValueError(f"attribute_loss: logits and targets must both have "
                     f"shape (batch, num_attributes); got "
                     f"{jnp.shape(attribute_logits)} and "
                     f"{jnp.shape(attribute_targets)}.")
  return optax.sigmoid_binary_cross_entropy(
      attribute_logits, attribute_targets.astype(attribute_logits.dtype)
  ).mean(-1)
