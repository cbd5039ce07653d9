"""Metric learning: Siamese (contrastive) and triplet networks, and their
retrieval / verification evaluation on held-out classes.

One shared embedding net (:class:`EmbeddingNet`, parameters ``backbone`` and
``head``, so a classifier's backbone loads into it with ``dont_load=head/.*``)
maps inputs to vectors whose distances mean similarity:

- Siamese networks (Bromley et al. 1993; Hadsell, Chopra & LeCun 2006):
  :func:`contrastive_loss` on pairs ``x1``, ``x2``, ``same``.
- Triplet networks (Schroff et al. 2015, "FaceNet"; Hermans et al. 2017):
  :func:`triplet_loss` on class-balanced batches ``x``, ``y`` with
  in-batch mining (``all`` / ``hard`` / ``semi_hard``). Under ``pmap`` the
  embeddings of all devices are gathered (``lax.all_gather(..., tiled=True)``)
  so mining sees the global batch; every device computes the global loss,
  and the gather's transpose (a ``psum_scatter``) times ``train_step``'s
  ``pmean`` gives exactly the global-batch gradient (tested). Under ``jit``
  over a mesh the step already sees the global batch.

- The losses of current deep metric learning on the same class-balanced
  batches, gathered the same way (:func:`batch_loss`): supervised
  contrastive and NT-Xent, multi-similarity with its miner, and ArcFace,
  CosFace and Proxy-Anchor, whose class matrix is the parameter
  ``params['proxies']`` (:func:`init_proxies`) beside ``backbone`` and
  ``head``.

Every loss has the step shape; :func:`make_step` binds any of them:

  >>> import jax, optax
  >>> from tljax import models
  >>> model = EmbeddingNet(models.MLP((32,)), dim=8)
  >>> params = models.init_params(model, (10,), 0)
  >>> step = make_step(model, optax.adam(1e-3), loss='triplet',
  ...                  mining='semi_hard')

Evaluation: :func:`recall_at_k` (k-NN retrieval, leave-one-out),
:func:`map_at_r` (MAP@R and R-precision, Musgrave et al. 2020) and
:func:`verification_auc` (same/different ROC-AUC over pairs), together in
:func:`retrieval_report`. The
experiment is :mod:`tljax.drivers.metric` (``experiments/metric.py``).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tljax import evaluation
from tljax import losses
from tljax import models
from tljax import ops
from tljax.train import state as state_lib

PyTree = Any


class EmbeddingNet(nn.Module):
  """``head(backbone(x))`` with a linear head to ``dim``; optionally
  L2-normalised (embeddings on the unit sphere, as in FaceNet)."""
  backbone: nn.Module
  dim: int = 64
  normalize: bool = False

  def setup(self):
    self.head = nn.Dense(self.dim)

  def __call__(self, x, *, train: bool = False):
    e = self.head(self.backbone(x, train=train))
    if self.normalize:
      e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    return e


def build_embedding_net(model_config, example_shape, *, dim: int,
                        normalize: bool = False,
                        modality: str | None = None) -> EmbeddingNet:
  """An :class:`EmbeddingNet` on the backbone ``model_config`` names (see
  :func:`tljax.models.backbone_from_config`)."""
  return EmbeddingNet(models.backbone_from_config(model_config, example_shape,
                                                  modality),
                      dim=dim, normalize=normalize)


def _embed(model, params, state, x, rng):
  return models.apply_train(model, params, x,
                            model_state=state_lib.model_state_of(state),
                            rng=rng)


def _model_params(params: PyTree) -> PyTree:
  """The embedding net's parameters: all but the loss's class matrix."""
  return {k: v for k, v in params.items() if k != "proxies"}


def batch_loss(params, state, batch, rng, *, model: nn.Module,
               loss: str = "triplet", axis_name: str | None = None,
               **loss_kwargs):
  """Any loss of :data:`BATCH_LOSSES` on ``model``'s embeddings of
  ``batch['x']`` (labels ``batch['y']``), over the global batch.

  Under ``pmap`` (``axis_name``) the embeddings and labels of all devices
  are gathered first, so that mining, the softmax denominators and the
  proxies' sums see the whole batch; see the module docstring. The losses
  with a class matrix (:data:`PROXY_LOSSES`) take it from
  ``params['proxies']`` (:func:`init_proxies`), ``(classes, dim)``; their
  labels must be ``0..classes-1``.
  """
  if loss not in BATCH_LOSSES:
    raise ValueError(f"loss must be one of {sorted(BATCH_LOSSES)}, got "
                     f"{loss!r}")
  if loss in PROXY_LOSSES and "proxies" not in params:
    raise ValueError(f"loss {loss!r} learns a class matrix: add "
                     "params['proxies'] = init_proxies(...) to the "
                     "parameters.")
  emb, model_state = _embed(model, _model_params(params), state, batch["x"],
                            rng)
  labels = batch["y"]
  if axis_name is not None:
    emb = jax.lax.all_gather(emb, axis_name, tiled=True)
    labels = jax.lax.all_gather(labels, axis_name, tiled=True)
  fn = BATCH_LOSSES[loss]
  if loss in PROXY_LOSSES:
    value = fn(emb, labels, params["proxies"], **loss_kwargs)
  else:
    value = fn(emb, labels, **loss_kwargs)
  return value, state_lib.loss_aux(
      {"embedding_norm": jnp.linalg.norm(emb, axis=-1).mean()}, model_state)


def triplet_loss(params, state, batch, rng, *, model: nn.Module,
                 margin: float = 0.2, mining: str = "all",
                 distance: str = "l2", axis_name: str | None = None):
  """Triplet loss of ``model``'s embeddings of ``batch['x']`` (labels
  ``batch['y']``), mined over the global batch; see the module docstring."""
  return batch_loss(params, state, batch, rng, model=model, loss="triplet",
                    axis_name=axis_name, margin=margin, mining=mining,
                    distance=distance)


def init_proxies(rng: jax.Array, num_classes: int, dim: int) -> jax.Array:
  """A ``(num_classes, dim)`` class matrix with standard normal entries
  (only the directions matter: every proxy loss normalises its rows)."""
  if num_classes < 2 or dim < 1:
    raise ValueError(f"a class matrix needs >= 2 classes and dim >= 1, got "
                     f"{num_classes} classes, dim {dim}")
  return jax.random.normal(rng, (num_classes, dim), jnp.float32)


def contrastive_loss(params, state, batch, rng, *, model: nn.Module,
                     pos_margin: float = 0.0, neg_margin: float = 1.0,
                     distance: str = "l2", axis_name: str | None = None):
  """Contrastive loss of a Siamese pair batch ``x1``, ``x2``, ``same``.

  Both inputs go through the one shared net in a single call. The loss is a
  mean over pairs, so ``train_step``'s ``pmean`` over equal device shards
  already gives the global mean (no gather needed).
  """
  del axis_name
  n = batch["x1"].shape[0]
  emb, model_state = _embed(model, params, state,
                            jnp.concatenate([batch["x1"], batch["x2"]]), rng)
  a, b = emb[:n], emb[n:]
  loss = jnp.mean(losses.contrastive_loss(
      a, b, batch["same"], pos_margin=pos_margin, neg_margin=neg_margin,
      distance=distance))
  d = jnp.linalg.norm(a - b, axis=-1)
  same = batch["same"].astype(bool)
  mean_d = lambda m: jnp.sum(jnp.where(m, d, 0.0)) / jnp.maximum(  # noqa: E731
      jnp.sum(m), 1)
  return loss, state_lib.loss_aux(
      {"dist_same": mean_d(same), "dist_diff": mean_d(~same)}, model_state)


# The losses of labelled (class-balanced) batches, by name: the pure
# functions of tljax.losses over the global batch.
BATCH_LOSSES = {
    "triplet": losses.triplet_loss,
    "supcon": losses.supcon_loss,
    "ntxent": losses.ntxent_loss,
    "multi_similarity": losses.multi_similarity_loss,
    "arcface": losses.arcface_loss,
    "cosface": losses.cosface_loss,
    "proxy_anchor": losses.proxy_anchor_loss,
    "softmax": losses.softmax_classifier_loss,
}
# Those that learn a class matrix params['proxies'].
PROXY_LOSSES = ("arcface", "cosface", "proxy_anchor", "softmax")
LOSSES = tuple(BATCH_LOSSES) + ("contrastive",)


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              loss: str = "triplet", **loss_kwargs):
  """The step of ``loss``: :func:`contrastive_loss` on pair batches
  (``pos_margin``, ``neg_margin``, ``distance``), or any of
  :data:`BATCH_LOSSES` on labelled batches through :func:`batch_loss`
  (``loss_kwargs`` are that loss's settings, e.g. ``margin``, ``mining``
  for ``triplet``, ``temperature`` for ``supcon``)."""
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
  if loss == "contrastive":
    return state_lib.loss_step(contrastive_loss, tx, model=model,
                               **loss_kwargs)
  return state_lib.loss_step(batch_loss, tx, model=model, loss=loss,
                             **loss_kwargs)


# ---------------------------------------------------------------- evaluation
def _check_eval_inputs(embeddings, labels, what: str):
  e, y = np.asarray(embeddings), np.asarray(labels)
  if e.ndim != 2:
    raise ValueError(f"{what}: embeddings must have shape (n, dim); got "
                     f"{e.shape}. Flatten raw inputs with x.reshape(n, -1).")
  if y.shape != (e.shape[0],):
    raise ValueError(f"{what}: labels must have shape ({e.shape[0]},), one "
                     f"per embedding; got {y.shape}.")
  if e.shape[0] < 2:
    raise ValueError(f"{what} needs at least two examples, got {e.shape[0]}")
  if not np.all(np.isfinite(e)):
    raise ValueError(f"{what}: embeddings contain NaN or Inf; the model "
                     "diverged or the inputs are not finite.")
  return e.astype(np.float32), y


def _neighbours(e, distance):
  """Every other example of each query, nearest first (``(n, n - 1)``;
  ties in index order)."""
  d = np.array(ops.pairwise_distances(jnp.asarray(e), kind=distance))
  np.fill_diagonal(d, np.inf)
  return np.argsort(d, axis=1, kind="stable")[:, :-1]


def recall_at_k(embeddings, labels, ks: Sequence[int] = (1,), *,
                distance: str = "l2") -> dict[str, float]:
  """Leave-one-out k-NN retrieval recall: the fraction of examples whose
  ``k`` nearest other examples include one of their class (the Recall@K of
  Song et al. 2016, "Deep Metric Learning via Lifted Structured Feature
  Embedding"). Returns ``{"recall@k": ...}`` for each ``k``."""
  e, y = _check_eval_inputs(embeddings, labels, "recall_at_k")
  n = e.shape[0]
  if any(not 1 <= k < n for k in ks):
    raise ValueError(f"recall_at_k: every k must be in [1, {n - 1}], got "
                     f"{list(ks)}")
  hit = y[_neighbours(e, distance)[:, :max(ks)]] == y[:, None]
  return {f"recall@{k}": float(hit[:, :k].any(1).mean()) for k in ks}


def map_at_r(embeddings, labels, *, distance: str = "l2"
             ) -> dict[str, float]:
  """MAP@R and R-precision (Musgrave, Belongie & Lim 2020, "A Metric
  Learning Reality Check"), exactly, leave-one-out.

  For a query with ``R`` other examples of its class, take its ``R``
  nearest other examples; ``rel_k`` is 1 if the ``k``-th is of its class.
  R-precision is ``sum_k rel_k / R``; MAP@R is ``1/R sum_{k<=R} rel_k
  P@k`` with ``P@k`` the precision of the first ``k``. Both are averaged
  over the queries with ``R >= 1`` (a class of one example has nothing to
  retrieve), as pytorch-metric-learning's ``AccuracyCalculator`` does. Ties
  in distance go to the lower index.

    >>> import numpy as np
    >>> e = np.array([[0.], [1.], [2.5], [3.]])
    >>> # Queries 0, 1, 3 (R = 2; 2 is alone): hits [1, 0], [1, 0], [0, 1].
    >>> map_at_r(e, np.array([0, 0, 1, 0]))
    {'map@r': 0.4166666666666667, 'r_precision': 0.5}

  Returns:
    ``{"map@r": ..., "r_precision": ...}``.

  Raises:
    ValueError: on bad shapes, non-finite embeddings, or when no class has
      two examples.
  """
  e, y = _check_eval_inputs(embeddings, labels, "map_at_r")
  r = (y[:, None] == y[None, :]).sum(1) - 1
  if not np.any(r > 0):
    raise ValueError("map_at_r: every class has one example; give several "
                     "examples of some class to retrieve.")
  rel = (y[_neighbours(e, distance)] == y[:, None])[r > 0]
  r = r[r > 0]
  within = np.arange(1, rel.shape[1] + 1)[None, :] <= r[:, None]
  rel = rel & within
  precision = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
  return {"map@r": float(np.mean(np.sum(precision * rel, 1) / r)),
          "r_precision": float(np.mean(rel.sum(1) / r))}


def verification_auc(embeddings, labels, *, distance: str = "l2",
                     max_pairs: int = 200_000, seed: int = 0) -> float:
  """ROC-AUC of ``-distance`` as a same/different score over pairs (all
  pairs ``i < j``, or ``max_pairs`` of them drawn with ``seed``)."""
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  e, y = _check_eval_inputs(embeddings, labels, "verification_auc")
  n = e.shape[0]
  i, j = np.triu_indices(n, k=1)
  if i.size > max_pairs:
    pick = np.random.default_rng(seed).choice(i.size, max_pairs, replace=False)
    i, j = i[pick], j[pick]
  same = y[i] == y[j]
  if same.all() or not same.any():
    raise ValueError("verification_auc needs both same-class and "
                     "different-class pairs; give examples of at least two "
                     "classes, several of one class.")
  d = np.asarray(ops.pairwise_distances(jnp.asarray(e), kind=distance))
  return float(metrics.roc_auc_score(same, -d[i, j]))


def evaluate(model: nn.Module, params: PyTree, dataset, *,
             ks: Sequence[int] = (1, 5), distance: str = "l2",
             model_state: PyTree | None = None) -> dict[str, float]:
  """Recall@k, MAP@R, R-precision and verification AUC of ``model``'s
  embeddings on ``dataset`` (held-out classes)."""
  dataset.require_labels(int(dataset.y.max()) + 1)
  emb = evaluation.predict(model, _model_params(params), dataset.x,
                           model_state=model_state)
  return retrieval_report(emb, dataset.y, ks, distance=distance)


def retrieval_report(embeddings, labels, ks: Sequence[int] = (1, 5), *,
                     distance: str = "l2") -> dict[str, float]:
  """:func:`recall_at_k`, :func:`map_at_r` and :func:`verification_auc` in
  one dict."""
  out = recall_at_k(embeddings, labels, ks, distance=distance)
  out.update(map_at_r(embeddings, labels, distance=distance))
  out["auc"] = verification_auc(embeddings, labels, distance=distance)
  return out


def raw_input_baseline(dataset, *, ks: Sequence[int] = (1, 5)
                       ) -> dict[str, float]:
  """The same metrics on flattened raw inputs (l2), the no-learning
  baseline."""
  return retrieval_report(dataset.x.reshape(len(dataset), -1), dataset.y, ks)
