"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning
Algorithms"): a first-order meta-learner that moves the initialisation
towards the parameters each task's SGD reaches.

For each task of a meta-batch (``jax.vmap``, as MAML), ``inner_steps`` plain
SGD steps on the task's support set from the shared initialisation
``theta`` give ``phi_i`` (:func:`tljax.methods.maml.inner_adapt`); the
batched Reptile update (their algorithm 2) is

    theta <- theta + epsilon * (mean_i phi_i - theta).

In the step shape this is the gradient of the surrogate ``1/2 ||theta -
stop_gradient(mean_i phi_i)||^2``, which is ``theta - mean_i phi_i``: with
``optax.sgd(epsilon)`` the step is exactly Reptile's update, and any other
optax optimizer uses ``theta - phi`` as its gradient (Nichol et al. also
feed it to Adam). No gradient flows through the inner loop.

``inner_optimizer='adam'`` runs the inner loop with Adam instead of SGD,
as Nichol et al.'s code does (``beta1 = 0``, rate 1e-3; TensorFlow's
``epsilon = 1e-8``): :func:`inner_transform`, ``optax.scale_by_adam`` with
a fresh state for each task (their TensorFlow Adam keeps its moments
across tasks and meta-steps instead). The test-time fine-tuning should then
use it too (their evaluation does; the experiment driver does). The reported
``loss`` is that surrogate; ``query_loss`` and (classification)
``accuracy`` are on each task's query set after adaptation. At test time
the initialisation is fine-tuned as MAML's is
(:func:`tljax.methods.maml.episode_accuracies`).

  >>> import jax, optax, flax.linen as nn
  >>> model = nn.Dense(1)
  >>> step = make_step(model, optax.sgd(1.0), kind='regression',
  ...                  inner_lr=0.02, inner_steps=5)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tljax import losses
from tljax.data import episodes
from tljax.methods import maml
from tljax.train import state as state_lib

INNER_OPTIMIZERS = ("sgd", "adam")


def inner_transform(inner_optimizer: str = "sgd", inner_b1: float = 0.0
                    ) -> optax.GradientTransformation | None:
  """What the inner loop does with a task's gradient before the step
  ``p - inner_lr * update`` (:func:`tljax.methods.maml.inner_adapt`'s
  ``inner_tx``): ``None`` for plain SGD, or Adam's scaling with first-moment
  decay ``inner_b1`` (Nichol et al. use 0), ``b2 = 0.999``, ``eps = 1e-8``.

  Raises:
    ValueError: an unknown optimizer, or ``inner_b1`` outside [0, 1).
  """
  if inner_optimizer == "sgd":
    return None
  if inner_optimizer == "adam":
    if not 0.0 <= inner_b1 < 1.0:
      raise ValueError(f"inner_b1 (Adam's first-moment decay in the inner "
                       f"loop) must be in [0, 1), got {inner_b1}")
    return optax.scale_by_adam(b1=inner_b1, b2=0.999, eps=1e-8)
  raise ValueError(f"unknown inner_optimizer {inner_optimizer!r}; choose one "
                   f"of {INNER_OPTIMIZERS}")


def reptile_loss(params, state, batch, rng, *, model: nn.Module, kind: str,
                 inner_lr=0.01, inner_steps: int | None = 5,
                 inner_rules=None, train_on_query: bool = False,
                 inner_optimizer: str = "sgd", inner_b1: float = 0.0,
                 head_init: str = "learned", axis_name: str | None = None):
  """The Reptile surrogate of a meta-batch (leading task axis), whose
  gradient in ``params`` is ``params - mean_i phi_i``; see the module
  docstring. Tasks are independent, so ``train_step``'s ``pmean`` over
  equal device shares of tasks averages ``phi`` over the global
  meta-batch.

  ``train_on_query``: the inner SGD runs on support and query examples
  together. Reptile needs no held-out query, so this is Nichol et al.'s
  ``--train-shots`` (meta-training tasks with more shots than the test's;
  they meta-train 1-shot models on 10 or 15 shots per class); the reported
  ``query_loss`` and ``accuracy`` are then on examples the task trained on.

  ``inner_optimizer``, ``inner_b1``: SGD or Adam in the inner loop
  (:func:`inner_transform`).

  ``head_init``: the head each task's inner loop starts from
  (:func:`tljax.methods.maml.task_head`); with ``zero`` or ``proto`` the
  meta-learned head is never used, and its target is itself (no update)."""
  del rng, axis_name
  maml.check_head_init(head_init, kind)
  ms = state_lib.model_state_of(state)
  theta = jax.lax.stop_gradient(params)
  inner_tx = inner_transform(inner_optimizer, inner_b1)

  def one(task):
    x, y = task["support_x"], task["support_y"]
    if train_on_query:
      x = jnp.concatenate([x, task["query_x"]])
      y = jnp.concatenate([y, task["query_y"]])
    start = maml.task_head(theta, task["support_x"], task["support_y"],
                           model=model, head_init=head_init, model_state=ms)
    phi = maml.inner_adapt(start, x, y,
                           model=model, kind=kind, inner_lr=inner_lr,
                           inner_steps=inner_steps, first_order=True,
                           inner_rules=inner_rules, model_state=ms,
                           inner_tx=inner_tx)
    out = maml.apply_on_task(model, phi, ms, task["query_x"])
    acc = (losses.accuracy(out, task["query_y"]) if kind == "classification"
           else jnp.zeros(()))
    if head_init != "learned":
      phi = dict(phi, head=theta["head"])
    return phi, maml.task_loss(kind, out, task["query_y"]), acc

  phi, query_loss, acc = jax.vmap(one)(episodes.task_arrays(batch))
  target = jax.tree.map(lambda p: p.mean(0), phi)
  surrogate = 0.5 * sum(jnp.sum(jnp.square(p - t)) for p, t in zip(
      jax.tree.leaves(params), jax.tree.leaves(target)))
  metrics = {"query_loss": query_loss.mean()}
  if kind == "classification":
    metrics["accuracy"] = acc.mean()
  return surrogate, metrics


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              kind: str, inner_lr=0.01, inner_steps: int | None = 5,
              inner_rules=None, train_on_query: bool = False,
              inner_optimizer: str = "sgd", inner_b1: float = 0.0,
              head_init: str = "learned"):
  """The Reptile step: :func:`reptile_loss` under ``tx`` (``optax.sgd(
  epsilon)`` for the paper's update; ``train_on_query``, ``inner_optimizer``,
  ``inner_b1`` and ``head_init``: see there)."""
  maml.check_config(kind, inner_steps, inner_lr)
  maml.check_head_init(head_init, kind)
  inner_transform(inner_optimizer, inner_b1)   # fail here, not when traced
  return state_lib.loss_step(reptile_loss, tx, model=model, kind=kind,
                             inner_lr=inner_lr, inner_steps=inner_steps,
                             inner_rules=inner_rules,
                             train_on_query=train_on_query,
                             inner_optimizer=inner_optimizer,
                             inner_b1=inner_b1, head_init=head_init)
