"""Prototypical networks (Snell, Swersky & Zemel 2017, "Prototypical Networks
for Few-shot Learning"): a metric-based meta-learner.

An embedding net ``f`` maps the support set of an N-way K-shot episode to
vectors; each class's prototype is the mean of its support embeddings,
``c_k = 1/K sum_{y_i = k} f(x_i)``, and a query is classified by a softmax over
negative (squared Euclidean) distances, ``p(y = k | x) ∝ exp(-d(f(x), c_k))``.
Training minimises the query cross-entropy over episodes of the meta-train
classes; nothing is fine-tuned at test time.

With a fixed embedding (e.g. a classifier's backbone pretrained on the
meta-train classes, or the raw inputs), the same :func:`episode_logits` is
the nearest-centroid baseline (Mensink et al. 2013; Chen et al. 2019, "A
Closer Look at Few-shot Classification"): :func:`centroid_accuracies`.

  >>> import jax.numpy as jnp
  >>> emb = jnp.array([[0., 0.], [2., 0.], [0., 4.]])
  >>> prototypes(emb, jnp.array([0, 0, 1]), 2).tolist()
  [[1.0, 0.0], [0.0, 4.0]]
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tljax import losses
from tljax import models
from tljax import ops
from tljax.data import episodes
from tljax.train import state as state_lib

PyTree = Any


def prototypes(support_emb: jax.Array, support_y: jax.Array,
               n_way: int) -> jax.Array:
  """Class means of the support embeddings, ``(n_way, dim)``.

  Raises:
    ValueError: on mismatched shapes.
  """
  if support_emb.ndim != 2 or support_y.shape != support_emb.shape[:1]:
    raise ValueError(f"prototypes: support embeddings (n, dim) and labels "
                     f"(n,) must match; got {support_emb.shape} and "
                     f"{support_y.shape}.")
  onehot = jax.nn.one_hot(support_y, n_way, dtype=support_emb.dtype)
  counts = jnp.maximum(onehot.sum(0), 1.0)
  return (onehot.T @ support_emb) / counts[:, None]


def proto_logits(query_emb: jax.Array, protos: jax.Array, *,
                 distance: str = "squared_l2") -> jax.Array:
  """Negative distances of each query to each prototype, ``(nq, n_way)``."""
  if query_emb.ndim != 2 or query_emb.shape[-1] != protos.shape[-1]:
    raise ValueError(f"proto_logits: query embeddings {query_emb.shape} and "
                     f"prototypes {protos.shape} must share their last "
                     "(feature) dimension.")
  return -ops.pairwise_distances(query_emb, protos, kind=distance)


def episode_logits(embed_fn: Callable[[jax.Array], jax.Array],
                   episode: dict, n_way: int, *,
                   distance: str = "squared_l2") -> jax.Array:
  """Query logits of one episode under any embedding function.

  Support and query go through ``embed_fn`` in one call (one forward pass).
  """
  ns = episode["support_x"].shape[0]
  emb = embed_fn(jnp.concatenate([episode["support_x"],
                                  episode["query_x"]]))
  emb = emb.reshape((emb.shape[0], -1))
  return proto_logits(emb[ns:], prototypes(emb[:ns], episode["support_y"],
                                           n_way), distance=distance)


def model_embed_fn(model: nn.Module, params: PyTree, *,
                   method: str | None = None,
                   model_state: PyTree | None = None):
  """``x -> model.apply(params, x)`` in inference mode (e.g.
  ``method='features'`` for a :class:`~tljax.models.Classifier`'s
  backbone)."""
  return lambda x: models.apply(model, params, x, model_state=model_state,
                                method=method)


def protonet_loss(params, state, batch, rng, *, model: nn.Module,
                  n_way: int, distance: str = "squared_l2",
                  method: str | None = None, axis_name: str | None = None):
  """Mean query cross-entropy over a meta-batch of episodes (leading task
  axis, from :class:`tljax.data.episodes.EpisodeSampler`); metric
  ``accuracy``. Tasks are independent, so ``train_step``'s ``pmean`` over
  equal device shares of tasks is the global mean."""
  del axis_name
  model_state = state_lib.model_state_of(state)

  def one(ep):
    # Training mode: a BatchNorm backbone normalises with each episode's
    # statistics; the running ones are the mean of the episodes' updates.
    updated = {}

    def embed(x):
      out, updated["model_state"] = models.apply_train(
          model, params, x, model_state=model_state, rng=rng, method=method)
      return out
    logits = episode_logits(embed, ep, n_way, distance=distance)
    return (jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, ep["query_y"])), losses.accuracy(logits, ep["query_y"]),
            updated["model_state"])

  ce, acc, new_state = jax.vmap(one)(episodes.task_arrays(batch))
  return ce.mean(), state_lib.loss_aux(
      {"accuracy": acc.mean()},
      jax.tree.map(lambda v: v.mean(0), new_state))


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              n_way: int, distance: str = "squared_l2",
              method: str | None = None):
  """The step of :func:`protonet_loss`."""
  return state_lib.loss_step(protonet_loss, tx, model=model, n_way=n_way,
                             distance=distance, method=method)


def centroid_accuracies(embed_fn, batch: dict, n_way: int, *,
                        distance: str = "squared_l2") -> jax.Array:
  """Per-episode query accuracy ``(tasks,)`` of nearest class centroid in
  the space of any embedding function (``lambda x: x.reshape(len(x), -1)``
  for raw inputs)."""
  return jax.vmap(lambda ep: losses.accuracy(
      episode_logits(embed_fn, ep, n_way, distance=distance),
      ep["query_y"]))(episodes.task_arrays(batch))


def episode_accuracies(params, batch: dict, *, model: nn.Module, n_way: int,
                       distance: str = "squared_l2",
                       method: str | None = None,
                       model_state: PyTree | None = None) -> jax.Array:
  """Per-episode query accuracy ``(tasks,)`` of the prototypical network
  (``model``'s embedding, or its ``method``, e.g. ``'features'``)."""
  return centroid_accuracies(
      model_embed_fn(model, params, method=method, model_state=model_state),
      batch, n_way, distance=distance)
