"""The train state and the one step shape every method shares.

    step(state, batch, rng, *, axis_name=None) -> (state, metrics)

A method supplies only a loss function

    loss_fn(params, state, batch, rng, *, axis_name=None) -> (loss, metrics)

and :func:`train_step` turns it into a step: it differentiates ``params``
(nothing else in the state), averages gradients over ``axis_name`` under
``pmap``, applies the optimizer, and adds ``loss``, ``l2_grads``,
``l2_params`` and ``l2_updates`` to the metrics (``norms=False``: the
loss alone; :func:`tree_l2_norm` keeps the norms cheap on small models,
where one reduction per leaf and tree had doubled a step's XLA
operations). A model with state
(BatchNorm statistics, in ``state.model_state``) makes the loss return
``(loss, (metrics, new_model_state))`` (:func:`tljax.models.apply_train`);
the step stores the new model state, averaged over ``axis_name`` under
``pmap`` (under a mesh the statistics are already the global batch's). Static collaborators (the
model, the optimizer, loss weights) are bound with ``functools.partial``:

    step = loss_step(my_loss, tx, model=model)   # the same, spelled out:
    step = functools.partial(train_step, tx=tx,
                             loss_fn=functools.partial(my_loss, model=model))
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """``step``, ``params``, ``opt_state``, the ``model_state`` and
  method-specific ``extra``.

  ``model_state`` is the model's collections other than ``params``
  (``{'batch_stats': ...}`` for BatchNorm; ``{}`` for most models): updated
  by the step, never differentiated, checkpointed with the rest.
  ``extra`` is a dict for what a method carries but does not differentiate:
  ``source_params`` for conservative training, a teacher's parameters, the
  frozen columns of a progressive net.
  """
  step: jax.Array
  params: PyTree
  opt_state: PyTree
  extra: PyTree = flax.struct.field(default_factory=dict)
  model_state: PyTree = flax.struct.field(default_factory=dict)


def create_train_state(params: PyTree, tx: optax.GradientTransformation, *,
                       extra: PyTree | None = None,
                       model_state: PyTree | None = None) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), extra=extra or {},
                    model_state=dict(model_state or {}))


# Leaves up to this size are concatenated into one reduction by
# tree_l2_norm (bounded extra memory; larger leaves are reduced in place).
_SMALL_LEAF = 1 << 16


def tree_l2_norm(tree: PyTree) -> jax.Array:
  """The l2 norm of all leaves of ``tree`` (``optax.tree.norm``), in few
  XLA operations: the small leaves (biases, norms' scales, a small model's
  kernels) are concatenated and reduced at once instead of one reduction
  per leaf; leaves of more than 65536 entries are reduced on their own, so
  the copy stays small. Float32 at least (the same value up to the order
  of summation)."""
  leaves = [jnp.asarray(x) for x in jax.tree.leaves(tree)]
  f32 = lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32))  # noqa: E731
  small = [jnp.ravel(f32(x)) for x in leaves if x.size <= _SMALL_LEAF]
  parts = [jnp.sum(jnp.square(f32(x))) for x in leaves
           if x.size > _SMALL_LEAF]
  if small:
    parts.append(jnp.sum(jnp.square(jnp.concatenate(
        [x.astype(jnp.result_type(*small)) for x in small]))))
  return jnp.sqrt(sum(parts)) if parts else jnp.zeros((), jnp.float32)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *,
               loss_fn: Callable, tx: optax.GradientTransformation,
               axis_name: str | None = None, norms: bool = True):
  """One optimizer step on ``loss_fn``; see the module docstring.

  ``norms=False`` leaves out ``l2_grads``, ``l2_params`` and
  ``l2_updates`` (``functools.partial(step, norms=False)`` on any step
  :func:`loss_step` made); the loss function's own metrics and ``loss``
  stay.
  """
  step_rng = jax.random.fold_in(rng, state.step)
  if axis_name is not None:
    step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))

  def objective(p):
    return loss_fn(p, state, batch, step_rng, axis_name=axis_name)

  (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(
      state.params)
  metrics, model_state = split_aux(aux, state.model_state)
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    loss, metrics, model_state = jax.lax.pmean((loss, metrics, model_state),
                                               axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss)
  if norms:
    metrics.update(l2_grads=tree_l2_norm(grads),
                   l2_params=tree_l2_norm(params),
                   l2_updates=tree_l2_norm(updates))
  return state.replace(step=state.step + 1, params=params,
                       opt_state=opt_state, model_state=model_state), metrics


def loss_step(loss_fn: Callable, tx: optax.GradientTransformation,
              **loss_kwargs) -> Callable:
  """The pure step of ``loss_fn`` with ``loss_kwargs`` bound (the model,
  loss weights, ...): ``step(state, batch, rng, *, axis_name=None,
  norms=True)``. Every method family's ``make_step`` is this with its own
  loss."""
  return functools.partial(train_step, tx=tx, loss_fn=functools.partial(
      loss_fn, **loss_kwargs))


def model_state_of(state) -> dict:
  """The train state's ``model_state`` (``{}`` for ``None`` or a state
  without one): what a loss passes to :func:`tljax.models.apply_train`."""
  return dict(getattr(state, "model_state", None) or {})


def loss_aux(metrics: dict, model_state: dict):
  """What a loss returns beside its value: ``metrics``, or ``(metrics,
  model_state)`` when the model has state to update."""
  return (metrics, model_state) if model_state else metrics


def split_aux(aux, model_state: dict) -> tuple[dict, dict]:
  """``(metrics, model_state)`` from a loss's aux (the inverse of
  :func:`loss_aux`; ``model_state`` when the loss updated none)."""
  return aux if isinstance(aux, tuple) else (aux, model_state)
