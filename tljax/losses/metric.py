"""Metric-learning losses: contrastive (Siamese) and triplet with mining.

Pure functions of arrays; mining is done with boolean masks over the
pairwise-distance matrix (no Python loops over examples), so every loss
compiles once and runs on the whole (global) batch.

  >>> import jax.numpy as jnp
  >>> emb = jnp.array([[0., 0.], [0., 1.], [3., 0.], [3., 1.]])
  >>> labels = jnp.array([0, 0, 1, 1])
  >>> float(triplet_loss(emb, labels, margin=0.2, mining="hard"))
  0.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tljax import ops

MINING = ("all", "hard", "semi_hard")
DISTANCES = ("l2", "squared_l2", "cosine")


def _check_distance(distance: str):
  if distance not in DISTANCES:
    raise ValueError(f"unknown distance {distance!r}; choose one of "
                     f"{', '.join(DISTANCES)}")


def _check_embeddings(embeddings, labels, what: str):
  if jnp.ndim(embeddings) != 2:
    raise ValueError(f"{what}: embeddings must have shape (batch, dim); got "
                     f"{jnp.shape(embeddings)}. Flatten them first.")
  if jnp.ndim(labels) != 1 or jnp.shape(labels)[0] != jnp.shape(embeddings)[0]:
    raise ValueError(f"{what}: labels must have shape "
                     f"({jnp.shape(embeddings)[0]},), one per embedding; got "
                     f"{jnp.shape(labels)}.")
  if jnp.shape(embeddings)[0] == 0:
    raise ValueError(f"{what}: the batch is empty; give at least two "
                     "embeddings.")


def _masks(labels: jax.Array):
  """Anchor-positive (same label, not the anchor) and anchor-negative masks."""
  same = labels[:, None] == labels[None, :]
  eye = jnp.eye(labels.shape[0], dtype=bool)
  return same & ~eye, ~same


def contrastive_loss(emb_a: jax.Array, emb_b: jax.Array, same: jax.Array, *,
                     pos_margin: float = 0.0, neg_margin: float = 1.0,
                     distance: str = "l2") -> jax.Array:
  """Contrastive loss of a Siamese network on pairs of embeddings.

  Hadsell, Chopra & LeCun (2006), "Dimensionality Reduction by Learning an
  Invariant Mapping", with a positive margin as well as the negative one (as
  in e.g. pytorch-metric-learning's ``ContrastiveLoss``): similar pairs are
  pulled in until their distance is below ``pos_margin``, dissimilar ones are
  pushed out beyond ``neg_margin``::

    l_i = same_i * 1/2 max(d_i - pos_margin, 0)^2
        + (1 - same_i) * 1/2 max(neg_margin - d_i, 0)^2

  where ``d_i = d(emb_a[i], emb_b[i])``. With ``pos_margin=0`` and the ``l2``
  distance this is Hadsell et al.'s loss. Returns ``l_i`` for every pair
  (reduce with :func:`tljax.losses.weighted_mean`).

    >>> import jax.numpy as jnp
    >>> a, b = jnp.array([[0., 0.], [0., 0.]]), jnp.array([[3., 4.], [.3, .4]])
    >>> contrastive_loss(a, b, jnp.array([1, 0]), neg_margin=1.0).tolist()
    [12.5, 0.125]

  Args:
    emb_a, emb_b: ``(n, dim)`` embeddings of the two inputs of each pair.
    same: ``(n,)`` 1 (or True) where the pair shows the same class.
    pos_margin: distances of similar pairs below this cost nothing.
    neg_margin: distances of dissimilar pairs above this cost nothing.
    distance: ``l2``, ``squared_l2`` or ``cosine`` (``1 - cos``).

  Returns:
    ``(n,)`` per-pair losses.

  Raises:
    ValueError: on mismatched shapes, an unknown distance or bad margins.
  """
  _check_distance(distance)
  if jnp.ndim(emb_a) != 2 or jnp.shape(emb_a) != jnp.shape(emb_b):
    raise ValueError("contrastive_loss: emb_a and emb_b must both have shape "
                     f"(pairs, dim); got {jnp.shape(emb_a)} and "
                     f"{jnp.shape(emb_b)}.")
  if jnp.shape(same) != jnp.shape(emb_a)[:1]:
    raise ValueError(f"contrastive_loss: same must have shape "
                     f"({jnp.shape(emb_a)[0]},), one flag per pair; got "
                     f"{jnp.shape(same)}.")
  if jnp.shape(emb_a)[0] == 0:
    raise ValueError("contrastive_loss: no pairs were given.")
  if not 0 <= pos_margin < neg_margin:
    raise ValueError(f"contrastive_loss needs 0 <= pos_margin < neg_margin; "
                     f"got pos_margin={pos_margin}, neg_margin={neg_margin}.")
  # The distance of each pair, from the shared pairwise-distance helper on
  # rows one at a time (a (1, dim) x (1, dim) "matrix" per pair).
  d = jax.vmap(lambda u, v: ops.pairwise_distances(
      u[None], v[None], kind=distance)[0, 0])(emb_a, emb_b)
  same = jnp.asarray(same, d.dtype)
  return 0.5 * (same * jnp.square(jnp.maximum(d - pos_margin, 0.0))
                + (1.0 - same) * jnp.square(jnp.maximum(neg_margin - d, 0.0)))


def triplet_loss(embeddings: jax.Array, labels: jax.Array, *,
                 margin: float = 0.2, mining: str = "all",
                 distance: str = "l2") -> jax.Array:
  """Triplet loss ``max(d(a, p) - d(a, n) + margin, 0)`` with in-batch mining.

  Every example of the batch serves as an anchor; positives share its label,
  negatives do not. The three mining strategies:

  - ``all`` ("batch all", Hermans, Beyer & Leibe 2017, "In Defense of the
    Triplet Loss for Person Re-Identification"): every valid triplet, the
    loss averaged over the triplets whose loss is non-zero (0 if none is).
  - ``hard`` ("batch hard", same paper): per anchor, the farthest positive
    and the nearest negative; averaged over the anchors that have at least
    one positive and one negative.
  - ``semi_hard`` (Schroff, Kalenichenko & Philbin 2015, "FaceNet"): per
    anchor-positive pair, the nearest negative that is still farther than
    the positive (``d(a, p) < d(a, n)``; it costs something only if it is
    also within the margin). A pair with no such negative uses its farthest
    negative, as in TensorFlow Addons' ``triplet_semihard_loss``. Averaged
    over the anchor-positive pairs that have at least one negative.

  Anchors without a positive or a negative in the batch contribute nothing;
  a batch without any valid triplet gives 0. Sample batches with several
  examples per class (:func:`tljax.data.episodes.class_balanced_batches`).

    >>> import jax.numpy as jnp
    >>> emb = jnp.array([[0.], [1.], [1.5]])
    >>> float(triplet_loss(emb, jnp.array([0, 0, 1]), margin=1.0,
    ...                    mining="hard"))  # anchors 0 and 1
    1.0

  Args:
    embeddings: ``(batch, dim)``.
    labels: ``(batch,)`` integer class labels.
    margin: the margin (>= 0).
    mining: ``all``, ``hard`` or ``semi_hard``.
    distance: ``l2``, ``squared_l2`` or ``cosine`` (``1 - cos(a, b)``).

  Returns:
    The scalar loss.

  Raises:
    ValueError: on bad shapes, an unknown mining mode or distance, or a
      negative margin.
  """
  _check_distance(distance)
  if mining not in MINING:
    raise ValueError(f"unknown mining {mining!r}; choose one of "
                     f"{', '.join(MINING)}")
  if margin < 0:
    raise ValueError(f"triplet_loss margin must be >= 0, got {margin}")
  _check_embeddings(embeddings, labels, "triplet_loss")
  d = ops.pairwise_distances(embeddings, kind=distance)
  pos, neg = _masks(labels)
  big = jnp.asarray(jnp.finfo(d.dtype).max, d.dtype)

  if mining == "all":
    # l[a, p, n] over every (anchor, positive, negative).
    l = d[:, :, None] - d[:, None, :] + margin
    valid = pos[:, :, None] & neg[:, None, :]
    l = jnp.where(valid, jnp.maximum(l, 0.0), 0.0)
    num_active = jnp.sum(l > 1e-16)
    return jnp.sum(l) / jnp.maximum(num_active, 1)

  if mining == "hard":
    hardest_pos = jnp.max(jnp.where(pos, d, 0.0), axis=1)
    hardest_neg = jnp.min(jnp.where(neg, d, big), axis=1)
    valid = pos.any(1) & neg.any(1)
    l = jnp.where(valid, jnp.maximum(hardest_pos - hardest_neg + margin, 0.0),
                  0.0)
    return jnp.sum(l) / jnp.maximum(jnp.sum(valid), 1)

  # semi_hard: for each (a, p), among negatives n of a:
  # the smallest d(a, n) with d(a, n) > d(a, p), else the largest d(a, n).
  d_ap = d[:, :, None]                  # (a, p, 1)
  d_an = d[:, None, :]                  # (a, 1, n)
  beyond = neg[:, None, :] & (d_an > d_ap)  # (a, p, n)
  nearest_beyond = jnp.min(jnp.where(beyond, d_an, big), axis=2)
  farthest = jnp.max(jnp.where(neg, d, -big), axis=1)[:, None]  # (a, 1)
  chosen = jnp.where(beyond.any(2), nearest_beyond, farthest)
  valid = pos & neg.any(1)[:, None]
  l = jnp.where(valid, jnp.maximum(d - chosen + margin, 0.0), 0.0)
  return jnp.sum(l) / jnp.maximum(jnp.sum(valid), 1)
