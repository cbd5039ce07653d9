r"""Progressive neural networks (Rusu et al. 2016, "Progressive Neural
Networks"): transfer by adding a column, never by changing an old one.

A :class:`tljax.models.progressive.ProgressiveNet` holds one column per task.
To learn task ``k``, :func:`add_column` copies the trained columns
``0..k-1`` into a net with one more column, and the optimizer freezes them
(:func:`freeze_earlier_rules`: ``lr_rules`` with ``None``, i.e.
``optax.masked(optax.set_to_zero())``), so only the new column and its
lateral adapters train, with :func:`column_loss` on the new task. Earlier
tasks keep their exact accuracy (no forgetting, tested bit for bit), and
the new column reads the old ones' features through the laterals.

  >>> import jax
  >>> from tljax import optim
  >>> from tljax.models.progressive import ProgressiveNet
  >>> src = ProgressiveNet(num_outputs=(10,), features=(16,))
  >>> p0 = src.init(jax.random.key(0), jax.numpy.zeros((1, 40)))['params']
  >>> net, params = add_column(src, p0, num_outputs=10, example_shape=(40,),
  ...                          seed=1)
  >>> tx = optim.make_optimizer(params, learning_rate=1e-3,
  ...                           lr_rules=freeze_earlier_rules(net))
  >>> step = make_step(net, tx)

The experiment (``experiments/progressive.py``,
:mod:`tljax.drivers.progressive`) trains column 0 on a source domain, then
compares on a target with few labels: the progressive net, the same with an
*untrained* frozen column 0 (a capacity control), fine-tuning the source
column, and a column trained from scratch.
"""

from __future__ import annotations

from typing import Any, Sequence

import optax

from tljax import evaluation
from tljax import losses
from tljax import models
from tljax import params as params_lib
from tljax.models.progressive import ProgressiveNet
from tljax.train import state as state_lib

PyTree = Any
STRATEGIES = ("progressive", "progressive_untrained", "finetune", "scratch")


def freeze_earlier_rules(model: ProgressiveNet) -> list[tuple[str, Any]]:
  """``lr_rules`` that freeze every column but the last one."""
  k = model.num_columns
  if k < 2:
    return [(".*", 1.0)]
  earlier = "|".join(str(j) for j in range(k - 1))
  return [(f"columns_({earlier})/.*", None), (".*", 1.0)]


def with_outputs(model: ProgressiveNet, num_outputs: Sequence[int]
                 ) -> ProgressiveNet:
  """The same column architecture with other tasks' output sizes."""
  return ProgressiveNet(num_outputs=tuple(num_outputs),
                        features=tuple(model.features),
                        conv_channels=tuple(model.conv_channels),
                        kernel_size=model.kernel_size,
                        adapter_dim=model.adapter_dim)


def add_column(model: ProgressiveNet, params: PyTree, *, num_outputs: int,
               example_shape: Sequence[int], seed: int
               ) -> tuple[ProgressiveNet, PyTree]:
  """A net with one more column: the trained ``params`` of ``model``'s
  columns, a freshly initialised new column ``columns_<K>``.

  Raises:
    ValueError: if ``params`` does not match ``model`` (e.g. a column
      missing or of another shape).
  """
  new = with_outputs(model, tuple(model.num_outputs) + (num_outputs,))
  init = models.init_params(new, example_shape, seed)
  merged = params_lib.merge_params(
      params, init, dont_load=(f"columns_{model.num_columns}/.*",))
  return new, merged


def column_loss(params, state, batch, rng, *, model: ProgressiveNet,
                column: int = -1, axis_name=None):
  """Cross-entropy of ``column``'s logits (default: the newest column) on
  ``batch['x']``/``batch['y']``; metrics: ``accuracy``."""
  del state, rng
  logits = model.apply({"params": params}, batch["x"], column=column,
                       train=True)
  loss = losses.weighted_mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]),
      batch.get("w"), axis_name=axis_name)
  return loss, {"accuracy": losses.accuracy(logits, batch["y"])}


def make_step(model: ProgressiveNet, tx: optax.GradientTransformation, *,
              column: int = -1):
  """The step of :func:`column_loss` (build ``tx`` with
  :func:`freeze_earlier_rules` so that only the new column trains)."""
  return state_lib.loss_step(column_loss, tx, model=model, column=column)


def accuracy(model: ProgressiveNet, params: PyTree, dataset) -> float:
  """Accuracy of the newest column's predictions on ``dataset``."""
  return evaluation.accuracy(model, params, dataset)


def column_accuracy(model: ProgressiveNet, params: PyTree, dataset,
                    column: int) -> float:
  """Accuracy of column ``column``'s outputs (an earlier task's) on
  ``dataset``."""
  early = with_outputs(model, tuple(model.num_outputs)[:column + 1])
  sub = {f"columns_{j}": params[f"columns_{j}"] for j in range(column + 1)}
  return evaluation.accuracy(early, sub, dataset)


def single_column_from(model: ProgressiveNet, params: PyTree, column: int, *,
                       num_outputs: int, example_shape, seed: int
                       ) -> tuple[ProgressiveNet, PyTree]:
  """A one-column net initialised from column ``column``'s own layers
  (not its laterals or head): the fine-tuning baseline."""
  single = with_outputs(model, (num_outputs,))
  init = models.init_params(single, example_shape, seed)
  src = params[f"columns_{column}"]
  loaded = {"columns_0": {k: v for k, v in src.items()
                          if k.startswith("layer_")}}
  return single, params_lib.merge_params(loaded, init,
                                         dont_load=("columns_0/head/.*",))
