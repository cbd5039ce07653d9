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

Both losses have the step shape; :func:`make_step` binds either:

  >>> import jax, optax
  >>> from tljax import models
  >>> model = EmbeddingNet(models.MLP((32,)), dim=8)
  >>> params = models.init_params(model, (10,), 0)
  >>> step = make_step(model, optax.adam(1e-3), loss='triplet',
  ...                  mining='semi_hard')

Evaluation: :func:`recall_at_k` (k-NN retrieval, leave-one-out) and
:func:`verification_auc` (same/different ROC-AUC over pairs). The
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


def triplet_loss(params, state, batch, rng, *, model: nn.Module,
                 margin: float = 0.2, mining: str = "all",
                 distance: str = "l2", axis_name: str | None = None):
  """Triplet loss of ``model``'s embeddings of ``batch['x']`` (labels
  ``batch['y']``), mined over the global batch; see the module docstring."""
  emb, model_state = _embed(model, params, state, batch["x"], rng)
  labels = batch["y"]
  if axis_name is not None:
    emb = jax.lax.all_gather(emb, axis_name, tiled=True)
    labels = jax.lax.all_gather(labels, axis_name, tiled=True)
  loss = losses.triplet_loss(emb, labels, margin=margin, mining=mining,
                             distance=distance)
  return loss, state_lib.loss_aux(
      {"embedding_norm": jnp.linalg.norm(emb, axis=-1).mean()}, model_state)


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


LOSSES = {"triplet": triplet_loss, "contrastive": contrastive_loss}


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              loss: str = "triplet", **loss_kwargs):
  """The step of :func:`triplet_loss` (``loss='triplet'``; ``margin``,
  ``mining``, ``distance``) or :func:`contrastive_loss`
  (``loss='contrastive'``; ``pos_margin``, ``neg_margin``, ``distance``)."""
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
  return state_lib.loss_step(LOSSES[loss], tx, model=model, **loss_kwargs)


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
  d = np.array(ops.pairwise_distances(jnp.asarray(e), kind=distance))
  np.fill_diagonal(d, np.inf)
  order = np.argsort(d, axis=1, kind="stable")[:, :max(ks)]
  hit = y[order] == y[:, None]
  return {f"recall@{k}": float(hit[:, :k].any(1).mean()) for k in ks}


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
  """Recall@k and verification AUC of ``model``'s embeddings on
  ``dataset`` (held-out classes)."""
  dataset.require_labels(int(dataset.y.max()) + 1)
  emb = evaluation.predict(model, params, dataset.x, model_state=model_state)
  out = recall_at_k(emb, dataset.y, ks, distance=distance)
  out["auc"] = verification_auc(emb, dataset.y, distance=distance)
  return out


def raw_input_baseline(dataset, *, ks: Sequence[int] = (1, 5)
                       ) -> dict[str, float]:
  """The same metrics on flattened raw inputs (l2), the no-learning
  baseline."""
  x = dataset.x.reshape(len(dataset), -1)
  out = recall_at_k(x, dataset.y, ks)
  out["auc"] = verification_auc(x, dataset.y)
  return out
