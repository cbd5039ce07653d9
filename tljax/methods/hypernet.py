"""A model-based meta-learner: a network that reads the support set and
writes the weights of the classifier head (fast weights).

Follows Qiao, Liu, Shen & Yuille (2018), "Few-Shot Image Recognition by
Predicting Parameters from Activations" (a learned map ``phi`` from a
class's mean activation to that class's classifier weights) with the
cosine-similarity classifier and learnable scale of Gidaris & Komodakis
(2018), "Dynamic Few-Shot Visual Learning without Forgetting":

    z_c = mean_{y_i = c} f(x_i)                         (support set, class c)
    w_c = z_c + phi([z_c, z_c - mean_c' z_c'])          (generated weights)
    logits(q)_c = tau * cos(f(q), w_c)

``phi`` (the ``generator``) sees each class mean and how it differs from
the episode's other classes, so the head it writes depends on the whole
support set. Its last layer starts at zero, so an untrained generator
writes the class means (a cosine prototype classifier); training
episodically (:func:`hypernet_loss` over meta-batches of N-way K-shot episodes)
learns ``f``, ``phi`` and ``tau`` together. At test time the head for new
classes comes from one forward pass, without gradient steps.

Parameters: ``backbone`` (any tljax backbone), ``embed`` (a linear layer
after it), ``generator``
(``layer_0``, ``layer_1``) and ``scale`` (``tau``).

  >>> import jax, jax.numpy as jnp
  >>> from tljax import models
  >>> m = HyperNetLearner(models.MLP((16,)), n_way=3)
  >>> sx, sy, qx = jnp.ones((6, 4)), jnp.array([0, 0, 1, 1, 2, 2]), jnp.ones((5, 4))
  >>> p = m.init(jax.random.key(0), sx, sy, qx)['params']
  >>> sorted(p), m.apply({'params': p}, sx, sy, qx).shape
  (['backbone', 'embed', 'generator', 'scale'], (5, 3))
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tljax import losses
from tljax import models
from tljax.data import episodes
from tljax.methods import protonet
from tljax.train import state as state_lib


def _unit(v: jax.Array) -> jax.Array:
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


class WeightGenerator(nn.Module):
  """``phi``: class means ``(n_way, d)`` -> head weights ``(n_way, d)``."""
  hidden: int = 128

  @nn.compact
  def __call__(self, means: jax.Array) -> jax.Array:
    context = means - means.mean(0, keepdims=True)
    h = nn.relu(nn.Dense(self.hidden, name="layer_0")(
        jnp.concatenate([means, context], -1)))
    return means + nn.Dense(means.shape[-1], name="layer_1",
                            kernel_init=nn.initializers.zeros)(h)


class HyperNetLearner(nn.Module):
  """Backbone + weight generator + cosine classifier; see the module doc."""
  backbone: nn.Module
  n_way: int
  hidden: int = 128
  init_scale: float = 10.0
  embed_dim: int = 64

  def setup(self):
    # A linear layer after the backbone's ReLU: cosine similarities of
    # non-negative features are all positive and crowd together (Gidaris &
    # Komodakis remove the last ReLU for the same reason).
    self.embed = nn.Dense(self.embed_dim)
    self.generator = WeightGenerator(self.hidden)
    self.scale = self.param("scale", nn.initializers.constant(
        self.init_scale), ())

  def features(self, x, *, train: bool = False):
    h = self.backbone(x, train=train)
    return self.embed(h.reshape((h.shape[0], -1)))

  def head_weights(self, support_feats, support_y):
    """The generated classifier weights ``(n_way, dim)``."""
    means = protonet.prototypes(support_feats, support_y, self.n_way)
    return self.generator(means)

  def __call__(self, support_x, support_y, query_x, *, train: bool = False):
    ns = support_x.shape[0]
    feats = self.features(jnp.concatenate([support_x, query_x]), train=train)
    w = self.head_weights(feats[:ns], support_y)
    return self.scale * _unit(feats[ns:]) @ _unit(w).T


def episode_logits(model: HyperNetLearner, params, episode: dict, *,
                   model_state=None):
  """Query logits of one episode (inference mode)."""
  return models.apply(model, params, episode["support_x"],
                      episode["support_y"], episode["query_x"],
                      model_state=model_state)


def hypernet_loss(params, state, batch, rng, *, model: HyperNetLearner,
                  axis_name: str | None = None):
  """Mean query cross-entropy over a meta-batch of episodes (leading task
  axis); metrics ``accuracy`` and ``scale``. A BatchNorm backbone trains
  with each episode's statistics (the running ones: their mean)."""
  del axis_name
  ms = state_lib.model_state_of(state)

  def one(ep):
    logits, new_ms = models.apply_train(
        model, params, ep["support_x"], ep["support_y"], ep["query_x"],
        model_state=ms, rng=rng)
    return (jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, ep["query_y"])), losses.accuracy(logits, ep["query_y"]),
            new_ms)

  ce, acc, new_ms = jax.vmap(one)(episodes.task_arrays(batch))
  return ce.mean(), state_lib.loss_aux(
      {"accuracy": acc.mean(), "scale": params["scale"]},
      jax.tree.map(lambda v: v.mean(0), new_ms))


def make_step(model: HyperNetLearner, tx: optax.GradientTransformation):
  """The step of :func:`hypernet_loss`."""
  return state_lib.loss_step(hypernet_loss, tx, model=model)


def episode_accuracies(params, batch: dict, *, model: HyperNetLearner,
                       model_state=None) -> jax.Array:
  """Per-episode query accuracy of a meta-batch, ``(tasks,)``."""
  return jax.vmap(lambda ep: losses.accuracy(
      episode_logits(model, params, ep, model_state=model_state),
      ep["query_y"]))(episodes.task_arrays(batch))
