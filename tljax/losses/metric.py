"""Metric-learning losses: contrastive (Siamese), triplet with mining, and
the losses deep metric learning reports today.

Pure functions of arrays over the whole (global) batch: under ``pmap`` the
caller gathers the embeddings first (:mod:`tljax.methods.metric_learning`
does). Every loss works on ``(B, B)`` (or ``(B, classes)``) matrices, in
``O(B^2)`` memory (no ``(B, B, B)`` tensor of triplets), and compiles once.

- :func:`contrastive_loss`, :func:`triplet_loss` (batch all / hard /
  semi-hard mining).
- :func:`supcon_loss` (supervised contrastive, Khosla et al. 2020) and
  :func:`ntxent_loss` (NT-Xent / InfoNCE, Chen et al. 2020; Oord et al.
  2018).
- :func:`multi_similarity_loss` with :func:`multi_similarity_miner` (Wang et
  al. 2019).
- Classification-style losses with a learned class matrix (one row per
  training class, e.g. ``params['proxies']``): :func:`arcface_loss` (Deng et
  al. 2019), :func:`cosface_loss` (Wang et al. 2018) and
  :func:`proxy_anchor_loss` (Kim et al. 2020).

The last five equal pytorch-metric-learning's losses of the same names on
the same inputs (tested); each docstring says where a reduction differs.

  >>> import jax.numpy as jnp
  >>> emb = jnp.array([[0., 0.], [0., 1.], [3., 0.], [3., 1.]])
  >>> labels = jnp.array([0, 0, 1, 1])
  >>> float(triplet_loss(emb, labels, margin=0.2, mining="hard"))
  0.0
"""

from __future__ import annotations

import functools
import math

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
  d = _pair_distances(emb_a, emb_b, distance)
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
  A NaN or Inf anywhere in ``embeddings`` makes the loss NaN (the trainer's
  NaN stop then says at which step), never a finite loss with NaN gradients.

  Precisely, with ``l = fl(fl(d(a, p) - d(a, n)) + margin)`` computed in the
  embeddings' dtype: ``all`` is ``sum(max(l, 0)) / max(#{l > 1e-16}, 1)``
  over valid triplets; ``semi_hard`` is ``sum(max(l, 0)) / max(#pairs, 1)``
  with ``n`` the chosen negative of each ``(a, p)``. Gradients are those of
  this formula under JAX's rules: a term with ``l == 0`` exactly gets half
  its gradient, and tied hardest, nearest or farthest entries share theirs
  equally.

  Memory is ``O(B^2)``: ``all`` and ``semi_hard`` never form the ``(B, B,
  B)`` tensor of every triplet; a loop over the ``j``-th positive of every
  anchor handles all anchors' negatives at once, one pass per positive
  slot, in time ``O(B^2 K)`` for classes of at most ``K`` examples. Each
  triplet's ``l`` is computed exactly as above; only the order in which the
  sums add up differs from the plain ``(B, B, B)`` formulation
  (:func:`_plain_triplet_loss`, kept as the reference of the tests).
  ``hard`` differentiates only the ``2B`` distances it selected (the whole
  matrix when some hardest entries tie).

    >>> import jax.numpy as jnp
    >>> emb = jnp.array([[0.], [1.], [1.5]])
    >>> float(triplet_loss(emb, jnp.array([0, 0, 1]), margin=1.0,
    ...                    mining="hard"))  # anchors 0 and 1
    1.0

  Args:
    embeddings: ``(batch, dim)``.
    labels: ``(batch,)`` integer class labels.
    margin: the margin (>= 0; may be traced).
    mining: ``all``, ``hard`` or ``semi_hard``.
    distance: ``l2``, ``squared_l2`` or ``cosine`` (``1 - cos(a, b)``).

  Returns:
    The scalar loss.

  Raises:
    ValueError: on bad shapes, an unknown mining mode or distance, or a
      negative margin.
  """
  _check_triplet_args(embeddings, labels, margin, mining, distance)
  embeddings, labels = jnp.asarray(embeddings), jnp.asarray(labels)
  margin = jnp.asarray(margin, jnp.result_type(float, embeddings))
  if mining == "hard":
    loss = _batch_hard(embeddings, labels, margin, distance)
  else:
    loss = _mined_loss(ops.pairwise_distances(embeddings, kind=distance),
                       labels, margin, mining)
  # The l2 distance maps a NaN to 0 (its safe sqrt), which would give a
  # finite loss with NaN gradients; say NaN instead.
  return jnp.where(jnp.all(jnp.isfinite(embeddings)), loss, jnp.nan)


def _check_triplet_args(embeddings, labels, margin, mining, distance):
  _check_distance(distance)
  if mining not in MINING:
    raise ValueError(f"unknown mining {mining!r}; choose one of "
                     f"{', '.join(MINING)}")
  # A traced margin (one compilation for many margins) is not checked.
  if not isinstance(margin, jax.core.Tracer) and margin < 0:
    raise ValueError(f"triplet_loss margin must be >= 0, got {margin}")
  _check_embeddings(embeddings, labels, "triplet_loss")


def _pair_distances(u, v, distance: str):
  """``d(u_i, v_i)`` for each row: the shared pairwise-distance helper on
  one ``(1, dim) x (1, dim)`` "matrix" per pair."""
  return jax.vmap(lambda u, v: ops.pairwise_distances(
      u[None], v[None], kind=distance)[0, 0])(u, v)


def _batch_hard_parts(d, labels, margin):
  """Batch-hard loss of ``d``; for its derivative also the weight ``w`` of
  each anchor's hinge and the masked distances it took the hardest of."""
  b = d.shape[0]
  same = labels[:, None] == labels[None, :]
  pos = same & ~jnp.eye(b, dtype=bool)
  big = jnp.asarray(jnp.finfo(d.dtype).max, d.dtype)
  # Both reductions in one: the min over negatives is minus a max.
  masked = jnp.stack([jnp.where(pos, d, 0.0), -jnp.where(same, big, d)])
  hardest = jnp.max(masked, axis=2)                        # (2, B)
  class_size = jnp.sum(same, axis=1, dtype=jnp.float32)
  valid = (class_size > 1) & (class_size < b)   # a positive and a negative
  raw = hardest[0] + hardest[1] + margin
  l = jnp.where(valid, jnp.maximum(raw, 0.0), 0.0)
  denom = jnp.maximum(jnp.sum(valid), 1)
  w = jnp.where(valid, _max0_grad(raw), 0.0).astype(d.dtype) / denom
  return jnp.sum(l) / denom, w, masked, hardest, jnp.stack([pos, ~same])


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _batch_hard(embeddings, labels, margin, distance: str):
  d = ops.pairwise_distances(embeddings, kind=distance)
  return _batch_hard_parts(d, labels, margin)[0]


@_batch_hard.defjvp
def _batch_hard_jvp(distance, primals, tangents):
  embeddings, labels, margin = primals
  de, _, dm = tangents
  d = ops.pairwise_distances(jax.lax.stop_gradient(embeddings), kind=distance)
  loss, w, masked, hardest, real = jax.lax.stop_gradient(
      _batch_hard_parts(d, labels, margin))
  # JAX's max (and min) share the derivative among the entries equal to the
  # result, masked ones included: count them. Usually each anchor's
  # derivative reaches one positive and one negative; then only those 2B
  # distances are differentiated, not the (B, B) matrix (two (B, B) x
  # (B, dim) products fewer). Ties take the dense path. The gradient in the
  # embeddings is formed here, so that the branch is all primal.
  ties = masked == hardest[:, :, None]
  counts = jnp.sum(ties, axis=2, dtype=jnp.float32)        # (2, B)
  single = jnp.all((w == 0) | jnp.all(counts == 1, axis=0))
  cols = jnp.arange(d.shape[0], dtype=jnp.float32)
  # The column of the one tied entry (a real positive, resp. negative: a
  # masked entry would tie with the other masked ones).
  where_tied = jnp.sum(jnp.where(ties, cols, 0.0), axis=2).astype(jnp.int32)

  def sparse(e):
    p, n = where_tied
    return jax.grad(lambda e: jnp.sum(w * (
        _pair_distances(e, e[p], distance)
        - _pair_distances(e, e[n], distance))))(e)

  def dense(e):
    share = jnp.where(ties & real, (w / jnp.maximum(counts, 1))[:, :, None],
                      0.0)
    d, vjp = jax.vjp(lambda e: ops.pairwise_distances(e, kind=distance), e)
    return vjp((share[0] - share[1]).astype(d.dtype))[0]

  grad = jax.lax.cond(single, sparse, dense, embeddings)
  return loss, jnp.vdot(grad, de) + jnp.sum(w).astype(loss.dtype) * dm


def _positive_slots(labels):
  """Positive slots: the ``j``-th positive of anchor ``a`` is ``order[first[a]
  + j + (j >= rank[a])]`` for ``j < num_pos[a]`` (its class's members in
  label order, skipping the anchor itself); ``slot[a, p]`` is the slot of the
  positive ``p`` of ``a`` (meaningless elsewhere)."""
  b = labels.shape[0]
  order = jnp.argsort(labels, stable=True).astype(jnp.int32)
  in_order = labels[order]
  first = jnp.searchsorted(in_order, labels, side="left").astype(jnp.int32)
  size = jnp.searchsorted(in_order, labels, side="right").astype(jnp.int32)
  position = jnp.zeros(b, jnp.int32).at[order].set(
      jnp.arange(b, dtype=jnp.int32))
  rank = position - first
  slot = rank[None, :] - (rank[None, :] > rank[:, None])
  return order, first, rank, size - first - 1, slot


def _max0_grad(x):
  """JAX's derivative of ``jnp.maximum(x, 0)``: 1, 1/2 at a tie, else 0."""
  return jnp.where(x > 0, 1.0, jnp.where(x == 0, 0.5, 0.0))


def _mined(d, labels, margin, mining: str, with_grad: bool):
  """Batch-all or semi-hard loss of the distance matrix ``d``, and with
  ``with_grad`` its derivatives in ``d`` and ``margin``.

  Step ``j`` of a ``fori_loop`` takes every anchor's ``j``-th positive (see
  :func:`_positive_slots`) and evaluates ``(a, p_j(a), n)`` for all anchors
  ``a`` and negatives ``n`` at once: ``(B, B)`` temporaries. The loss is
  piecewise linear in ``d``; its derivative is accumulated as weights on the
  negatives ``(a, n)`` and on the slots ``(a, j)``.
  """
  b = d.shape[0]
  rows = jnp.arange(b)
  acc = jnp.promote_types(d.dtype, jnp.float32)
  order, first, rank, num_pos, slot = _positive_slots(labels)
  neg = labels[:, None] != labels[None, :]
  has_neg = neg.any(1)
  big = jnp.asarray(jnp.finfo(d.dtype).max, d.dtype)
  if mining == "semi_hard":
    farthest = jnp.max(jnp.where(neg, d, -big), axis=1)
    far_tie = neg & (d == farthest[:, None])
    far_count = far_tie.sum(1)

  def body(j, carry):
    total, count, w_slot, wn = carry
    p = order[jnp.minimum(first + j + (j >= rank), b - 1)]
    d_ap = d[rows, p]
    if mining == "all":
      valid = (j < num_pos)[:, None] & neg                  # (a, n)
      raw = d_ap[:, None] - d + margin
      l = jnp.where(valid, jnp.maximum(raw, 0.0), 0.0)
      total = total + l.sum(1, dtype=acc)
      count = count + (l > 1e-16).sum(1, dtype=jnp.int32)
      if with_grad:
        w = jnp.where(valid, _max0_grad(raw), 0.0).astype(acc)
        wn = wn + w
        w_ap = w.sum(1)
    else:
      valid = (j < num_pos) & has_neg                       # (a,)
      beyond = neg & (d > d_ap[:, None])                    # (a, n)
      nearest = jnp.min(jnp.where(beyond, d, big), axis=1)
      any_beyond = beyond.any(1)
      raw = d_ap - jnp.where(any_beyond, nearest, farthest) + margin
      total = total + jnp.where(valid, jnp.maximum(raw, 0.0), 0.0).astype(acc)
      if with_grad:
        w_ap = jnp.where(valid, _max0_grad(raw), 0.0).astype(acc)
        tie = jnp.where(any_beyond[:, None], beyond & (d == nearest[:, None]),
                        far_tie)
        share = w_ap / jnp.maximum(
            jnp.where(any_beyond, tie.sum(1), far_count), 1)
        wn = wn + jnp.where(tie, share[:, None], 0.0)
    if with_grad:
      w_slot = jax.lax.dynamic_update_slice(w_slot, w_ap[:, None], (0, j))
    return total, count, w_slot, wn

  init = (jnp.zeros(b, acc), jnp.zeros(b, jnp.int32))
  init += ((jnp.zeros((b, b), acc),) * 2 if with_grad else (None, None))
  total, count, w_slot, wn = jax.lax.fori_loop(0, jnp.max(num_pos), body,
                                               init)
  if mining == "all":
    denom = jnp.sum(count.astype(acc))             # active triplets
  else:
    denom = jnp.sum(jnp.where(has_neg, num_pos, 0).astype(acc))  # pairs
  denom = jnp.maximum(denom, 1.0)
  loss = (jnp.sum(total) / denom).astype(d.dtype)
  if not with_grad:
    return loss
  pos = ~neg & (rows[:, None] != rows)
  wp = jnp.where(pos, jnp.take_along_axis(w_slot, jnp.where(pos, slot, 0),
                                          axis=1), 0.0)
  return (loss, ((wp - wn) / denom).astype(d.dtype),
          (jnp.sum(wp) / denom).astype(d.dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _mined_loss(d, labels, margin, mining: str):
  return _mined(d, labels, margin, mining, with_grad=False)


@_mined_loss.defjvp
def _mined_loss_jvp(mining, primals, tangents):
  d, labels, margin = primals
  dd, _, dm = tangents
  # Piecewise linear in (d, margin): the derivatives are constant pieces.
  loss, gd, gm = _mined(jax.lax.stop_gradient(d), labels,
                        jax.lax.stop_gradient(margin), mining, with_grad=True)
  return loss, jnp.sum(gd * dd) + gm * dm


def _plain_triplet_loss(embeddings, labels, *, margin: float = 0.2,
                        mining: str = "all", distance: str = "l2"):
  """:func:`triplet_loss` as masks over the ``(B, B, B)`` tensor of every
  triplet: the definition the tests hold the ``O(B^2)`` code to."""
  d = ops.pairwise_distances(embeddings, kind=distance)
  pos, neg = _masks(labels)
  big = jnp.asarray(jnp.finfo(d.dtype).max, d.dtype)
  if mining == "hard":
    hardest_pos = jnp.max(jnp.where(pos, d, 0.0), axis=1)
    hardest_neg = jnp.min(jnp.where(neg, d, big), axis=1)
    valid = pos.any(1) & neg.any(1)
    l = jnp.where(valid, jnp.maximum(hardest_pos - hardest_neg + margin, 0.0),
                  0.0)
    return jnp.sum(l) / jnp.maximum(jnp.sum(valid), 1)

  if mining == "all":
    # l[a, p, n] over every (anchor, positive, negative).
    l = d[:, :, None] - d[:, None, :] + margin
    valid = pos[:, :, None] & neg[:, None, :]
    l = jnp.where(valid, jnp.maximum(l, 0.0), 0.0)
    num_active = jnp.sum(l > 1e-16)
    return jnp.sum(l) / jnp.maximum(num_active, 1)

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


# ------------------------------------------------- similarity-based losses
def _check_positive(what: str, **values):
  for name, v in values.items():
    if not isinstance(v, jax.core.Tracer) and not v > 0:
      raise ValueError(f"{what}: {name} must be > 0, got {v}")


def _normalize(x: jax.Array) -> jax.Array:
  """Rows scaled to unit length (a zero row stays zero), as
  ``torch.nn.functional.normalize`` does."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_similarity(u: jax.Array, v: jax.Array | None = None) -> jax.Array:
  """``(n, m)`` cosine similarities of the rows of ``u`` and ``v`` (default
  ``u``)."""
  u = _normalize(u)
  return u @ (u if v is None else _normalize(v)).T


def _log1p_sum_exp(x: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
  """``log(1 + sum_{mask} exp(x))`` along ``axis``, stably; 0 where the mask
  is empty, with finite gradients (masked entries get none)."""
  x = jnp.where(mask, x, -jnp.inf)
  zero = jnp.zeros_like(jnp.take(x, jnp.array([0]), axis=axis))
  return jax.nn.logsumexp(jnp.concatenate([x, zero], axis=axis), axis=axis)


def _nan_if_not_finite(embeddings, loss):
  return jnp.where(jnp.all(jnp.isfinite(embeddings)), loss, jnp.nan)


def supcon_loss(embeddings: jax.Array, labels: jax.Array, *,
                temperature: float = 0.1) -> jax.Array:
  """Supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive
  Learning", the ``L_out`` form of their eq. 2).

  With ``z`` the L2-normalised embeddings, ``P(i)`` the other examples of
  ``i``'s class and ``A(i)`` all examples but ``i``::

    l_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / t)
                                         / sum_{a in A(i)} exp(z_i.z_a / t) )

  averaged over the anchors that have a positive (0 if none has). For a
  batch of two augmented views of each image, labelled by image, this is
  SimCLR's NT-Xent (Chen et al. 2020).

  Equals pytorch-metric-learning's ``SupConLoss(temperature)``, except that
  PML averages over anchors with a *non-zero* loss (``AvgNonZeroReducer``:
  it differs only for an anchor whose loss is exactly 0, i.e. whose
  denominator holds only its one positive) and returns 0 for a batch
  without any negative pair (here a one-class batch gives
  ``log(|P(i)|)`` per anchor, as the formula says).

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[1., 0.], [1., 0.], [0., 1.]])
    >>> round(float(supcon_loss(z, jnp.array([0, 0, 1]), temperature=1.)), 4)
    0.3133

  Args:
    embeddings: ``(batch, dim)``; normalised here.
    labels: ``(batch,)`` integer labels.
    temperature: ``t > 0``.

  Returns:
    The scalar loss (NaN if an embedding is not finite).
  """
  _check_embeddings(embeddings, labels, "supcon_loss")
  _check_positive("supcon_loss", temperature=temperature)
  logits = cosine_similarity(embeddings) / temperature
  pos, _ = _masks(labels)
  others = ~jnp.eye(labels.shape[0], dtype=bool)
  log_prob = logits - jax.nn.logsumexp(jnp.where(others, logits, -jnp.inf),
                                       axis=1, keepdims=True)
  num_pos = pos.sum(1)
  per_anchor = -jnp.sum(jnp.where(pos, log_prob, 0.0), 1) / jnp.maximum(
      num_pos, 1)
  has_pos = num_pos > 0
  loss = jnp.sum(jnp.where(has_pos, per_anchor, 0.0)) / jnp.maximum(
      has_pos.sum(), 1)
  return _nan_if_not_finite(embeddings, loss)


def ntxent_loss(embeddings: jax.Array, labels: jax.Array, *,
                temperature: float = 0.1) -> jax.Array:
  """NT-Xent / InfoNCE (Chen et al. 2020, "A Simple Framework for
  Contrastive Learning of Visual Representations"; Oord et al. 2018), one
  term per positive pair.

  For every ordered positive pair ``(i, p)`` (same label, ``p != i``), with
  cosine similarities ``s`` and ``N(i)`` the examples of other classes::

    l_ip = -log( exp(s_ip / t) / (exp(s_ip / t) + sum_{n in N(i)} exp(s_in / t)) )

  averaged over all positive pairs (0 without any). Unlike
  :func:`supcon_loss`, the other positives stay out of the denominator.
  SimCLR's loss is this on two views per image, labels
  ``concatenate([arange(n), arange(n)])``.

  Equals pytorch-metric-learning's ``NTXentLoss(temperature)`` (whose
  default temperature is 0.07); PML adds ``1e-38`` inside the log.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[1., 0.], [1., 0.], [0., 1.]])
    >>> round(float(ntxent_loss(z, jnp.array([0, 0, 1]), temperature=1.)), 4)
    0.3133

  Args:
    embeddings: ``(batch, dim)``; normalised here.
    labels: ``(batch,)`` integer labels.
    temperature: ``t > 0``.

  Returns:
    The scalar loss (NaN if an embedding is not finite).
  """
  _check_embeddings(embeddings, labels, "ntxent_loss")
  _check_positive("ntxent_loss", temperature=temperature)
  logits = cosine_similarity(embeddings) / temperature
  pos, neg = _masks(labels)
  neg_lse = jax.nn.logsumexp(jnp.where(neg, logits, -jnp.inf), axis=1,
                             keepdims=True)              # -inf: no negative
  l = jnp.logaddexp(logits, neg_lse) - logits
  loss = jnp.sum(jnp.where(pos, l, 0.0)) / jnp.maximum(pos.sum(), 1)
  return _nan_if_not_finite(embeddings, loss)


def multi_similarity_miner(similarity: jax.Array, labels: jax.Array, *,
                           epsilon: float = 0.1
                           ) -> tuple[jax.Array, jax.Array]:
  """The pair miner of multi-similarity loss (Wang et al. 2019, eq. 7-8).

  A positive pair ``(i, j)`` is kept if ``S_ij - epsilon < max_{k in N(i)}
  S_ik`` (it is less similar than the hardest negative, up to
  ``epsilon``), a negative pair ``(i, k)`` if ``S_ik + epsilon > min_{j in
  P(i)} S_ij``. An anchor without negatives keeps no positive, one without
  positives no negative (as pytorch-metric-learning's
  ``MultiSimilarityMiner``).

  Args:
    similarity: ``(batch, batch)`` similarities (e.g.
      :func:`cosine_similarity`).
    labels: ``(batch,)``.
    epsilon: the mining margin.

  Returns:
    ``(positive_mask, negative_mask)``, boolean ``(batch, batch)``; no
    gradient flows through them.
  """
  s = jax.lax.stop_gradient(similarity)
  pos, neg = _masks(labels)
  hardest_neg = jnp.max(jnp.where(neg, s, -jnp.inf), axis=1, keepdims=True)
  hardest_pos = jnp.min(jnp.where(pos, s, jnp.inf), axis=1, keepdims=True)
  return pos & (s - epsilon < hardest_neg), neg & (s + epsilon > hardest_pos)


def multi_similarity_loss(embeddings: jax.Array, labels: jax.Array, *,
                          alpha: float = 2.0, beta: float = 50.0,
                          base: float = 0.5,
                          epsilon: float | None = 0.1) -> jax.Array:
  """Multi-similarity loss (Wang, Han, Huang, Dong & Scott 2019,
  "Multi-Similarity Loss with General Pair Weighting for Deep Metric
  Learning", eq. 10), on the pairs :func:`multi_similarity_miner` keeps.

  With cosine similarities ``S``, ``base`` = ``lambda`` and the mined
  positive and negative pairs ``P_i``, ``N_i`` of each anchor::

    l_i = 1/alpha log(1 + sum_{P_i} exp(-alpha (S_ij - lambda)))
        + 1/beta  log(1 + sum_{N_i} exp( beta (S_ik - lambda)))

  averaged over every anchor of the batch (those with no mined pair count
  as 0, as in the paper and PML's ``MeanReducer``). ``epsilon=None`` uses
  every pair (no mining).

  Equals pytorch-metric-learning's ``MultiSimilarityLoss(alpha, beta,
  base)`` with ``indices_tuple`` from ``MultiSimilarityMiner(epsilon)``.

  Returns:
    The scalar loss (NaN if an embedding is not finite).
  """
  _check_embeddings(embeddings, labels, "multi_similarity_loss")
  _check_positive("multi_similarity_loss", alpha=alpha, beta=beta)
  s = cosine_similarity(embeddings)
  if epsilon is None:
    pos, neg = _masks(labels)
  else:
    pos, neg = multi_similarity_miner(s, labels, epsilon=epsilon)
  l = (_log1p_sum_exp(-alpha * (s - base), pos, 1) / alpha
       + _log1p_sum_exp(beta * (s - base), neg, 1) / beta)
  return _nan_if_not_finite(embeddings, jnp.mean(l))


def _check_class_matrix(embeddings, labels, weights, what):
  _check_embeddings(embeddings, labels, what)
  if jnp.ndim(weights) != 2 or jnp.shape(weights)[1] != jnp.shape(
      embeddings)[1]:
    raise ValueError(f"{what}: the class matrix must have shape (classes, "
                     f"{jnp.shape(embeddings)[1]}), one row per class; got "
                     f"{jnp.shape(weights)}.")


def _margin_softmax(embeddings, labels, weights, target_logit, scale):
  cos = cosine_similarity(embeddings, weights)               # (B, C)
  onehot = jax.nn.one_hot(labels, weights.shape[0], dtype=bool)
  target = jnp.sum(jnp.where(onehot, cos, 0.0), 1)
  logits = scale * jnp.where(onehot, target_logit(target)[:, None], cos)
  ce = jax.nn.logsumexp(logits, 1) - jnp.sum(jnp.where(onehot, logits, 0.0),
                                              1)
  return _nan_if_not_finite(embeddings, jnp.mean(ce))


def arcface_loss(embeddings: jax.Array, labels: jax.Array,
                 weights: jax.Array, *, margin: float = 0.5,
                 scale: float = 64.0) -> jax.Array:
  """ArcFace, additive angular margin softmax (Deng, Guo, Xue & Zafeiriou
  2019, "ArcFace: Additive Angular Margin Loss for Deep Face Recognition").

  With ``cos(theta_j)`` the cosine between an embedding and the class row
  ``weights[j]``, the target class's logit is ``s cos(theta_y + m)`` and the
  others' ``s cos(theta_j)``; the loss is the mean softmax cross-entropy.
  Where ``theta_y > pi - m`` (there ``cos(theta + m)`` would rise again) the
  target logit is ``s (cos(theta_y) - m sin(m))``, as in the authors' code
  and PML. ``weights`` is a learned parameter (``params['proxies']``).

  Equals pytorch-metric-learning's ``ArcFaceLoss(num_classes, dim,
  margin=degrees(m), scale=s)`` with ``loss.W = weights.T`` (PML takes the
  margin in degrees, default 28.6 = 0.5 rad). ``sin(theta)`` is computed as
  ``sqrt(max(1 - cos^2, 1e-12))``, so that the gradient stays finite at
  ``cos = +-1`` (the value differs there by at most ``1e-6 sin(m) s``).

  Args:
    embeddings: ``(batch, dim)``.
    labels: ``(batch,)`` in ``[0, classes)``.
    weights: ``(classes, dim)`` class matrix.
    margin: the angular margin ``m`` in radians, in ``[0, pi/2]``.
    scale: the scale ``s``.

  Returns:
    The scalar loss.
  """
  _check_class_matrix(embeddings, labels, weights, "arcface_loss")
  _check_positive("arcface_loss", scale=scale)
  if not 0 <= margin <= math.pi / 2:
    raise ValueError(f"arcface_loss: margin is an angle in radians in [0, "
                     f"pi/2]; got {margin}")
  cos_m, sin_m = math.cos(margin), math.sin(margin)

  def target_logit(c):
    sin = jnp.sqrt(jnp.maximum(1.0 - jnp.square(c), 1e-12))
    # theta <= pi - m  <=>  cos(theta) >= -cos(m).
    return jnp.where(c >= -cos_m, c * cos_m - sin * sin_m, c - margin * sin_m)
  return _margin_softmax(embeddings, labels, weights, target_logit, scale)


def softmax_classifier_loss(embeddings: jax.Array, labels: jax.Array,
                            weights: jax.Array) -> jax.Array:
  """Plain softmax cross-entropy of a bias-free linear classifier
  ``weights`` ``(classes, dim)`` on the embeddings: the embedding is then
  the last hidden layer of a classifier trained on the training classes,
  the "pretrained classifier's features" baseline of metric learning
  (Musgrave et al. 2020 report it beside the metric losses). Logits are
  scaled by ``1/sqrt(dim)`` so that standard-normal ``weights``
  (:func:`tljax.methods.metric_learning.init_proxies`) start with unit-scale logits."""
  logits = embeddings @ weights.T / math.sqrt(embeddings.shape[-1])
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def cosface_loss(embeddings: jax.Array, labels: jax.Array,
                 weights: jax.Array, *, margin: float = 0.35,
                 scale: float = 64.0) -> jax.Array:
  """CosFace, large margin cosine loss (Wang et al. 2018, "CosFace: Large
  Margin Cosine Loss for Deep Face Recognition"): the target logit is
  ``s (cos(theta_y) - m)``, the others ``s cos(theta_j)``; mean softmax
  cross-entropy. Equals pytorch-metric-learning's ``CosFaceLoss(
  num_classes, dim, margin=m, scale=s)`` with ``loss.W = weights.T``.

  Args, Returns: as :func:`arcface_loss` (``margin`` is a cosine offset).
  """
  _check_class_matrix(embeddings, labels, weights, "cosface_loss")
  _check_positive("cosface_loss", scale=scale)
  return _margin_softmax(embeddings, labels, weights, lambda c: c - margin,
                         scale)


def proxy_anchor_loss(embeddings: jax.Array, labels: jax.Array,
                      proxies: jax.Array, *, margin: float = 0.1,
                      alpha: float = 32.0) -> jax.Array:
  """Proxy-Anchor loss (Kim, Kim, Cho & Kwak 2020, "Proxy Anchor Loss for
  Deep Metric Learning", eq. 4).

  With cosine similarities ``s(x, p)`` between embeddings and the learned
  proxies (one per class), ``X_p+`` the batch's examples of ``p``'s class,
  ``X_p-`` the others, and ``P+`` the proxies with an example in the
  batch::

    1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - margin)))
    + 1/|P| sum_{p in P} log(1 + sum_{x in X_p-} exp( alpha (s(x, p) + margin)))

  Each proxy anchors a sum over the whole batch, so the batch must be the
  global one (gather under ``pmap``). Equals pytorch-metric-learning's
  ``ProxyAnchorLoss(num_classes, dim, margin, alpha)`` with ``loss.proxies
  = proxies``.

  Args:
    embeddings: ``(batch, dim)``.
    labels: ``(batch,)`` in ``[0, classes)``.
    proxies: ``(classes, dim)``.
    margin, alpha: ``delta`` and ``alpha`` of the paper.

  Returns:
    The scalar loss.
  """
  _check_class_matrix(embeddings, labels, proxies, "proxy_anchor_loss")
  _check_positive("proxy_anchor_loss", alpha=alpha)
  s = cosine_similarity(embeddings, proxies)               # (B, C)
  onehot = jax.nn.one_hot(labels, proxies.shape[0], dtype=bool)
  pos_term = _log1p_sum_exp(-alpha * (s - margin), onehot, 0)   # (C,)
  neg_term = _log1p_sum_exp(alpha * (s + margin), ~onehot, 0)
  with_pos = jnp.maximum(onehot.any(0).sum(), 1)
  loss = pos_term.sum() / with_pos + neg_term.sum() / proxies.shape[0]
  return _nan_if_not_finite(embeddings, loss)
