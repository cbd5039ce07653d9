"""Fine-tuning: layer transfer, freezing, per-layer rates, gradual
unfreezing, and conservative training (L2-SP, LwF).

Everything is pytree arithmetic on the :mod:`tljax.params` rule lists:

  >>> import jax, jax.numpy as jnp
  >>> from tljax import models, optim
  >>> model = models.Classifier(models.MLP((8, 8, 8)), num_classes=3)
  >>> init = lambda s: model.init(jax.random.key(s), jnp.zeros((1, 4)))['params']
  >>> source, fresh = init(0), init(1)
  >>> keep = layer_patterns(3, 2, 'first')     # layer transfer, first 2 layers
  >>> keep
  ('backbone/layer_0/.*', 'backbone/layer_1/.*')
  >>> params = transfer_layers(source, fresh, keep)
  >>> tx = optim.make_optimizer(params, lr_rules=freeze_rules(keep))

- **Layer transfer** (Yosinski et al., 2014, "How transferable are features
  in deep neural networks?"): copy the layers named by regexes from the
  source, freeze them, re-initialise the rest. "Keep the first k layers" is
  the image recipe; "keep the last k layers" is the speech recipe, where the
  input layers are re-learned for a new channel or language and the upper
  layers are shared (e.g. Ghoshal et al., 2013; Ghahremani et al., 2017).
- **Per-layer learning rates** (``discriminative_lr_rules``) and **gradual
  unfreezing** (``gradual_unfreezing_stages``), after ULMFiT (Howard & Ruder,
  2018, "Universal Language Model Fine-tuning for Text Classification").
- **L2-SP** (Li, Grandvalet & Davoine, 2018): :func:`l2_sp_loss`, with the
  starting point in ``state.extra['source_params']``.
- **LwF** (Li & Hoiem, 2016, "Learning without Forgetting"):
  :func:`lwf_loss`; the parameters carry a trainable copy of the source head
  (``source_head``) and ``state.extra['source_params']`` the frozen source
  model whose outputs it must keep.

:func:`make_step` gives the step of either loss (or of plain fine-tuning).
Many short runs (label budgets x strategies x seeds) go through
:class:`tljax.train.Trainer`, which compiles a step once and reuses it for
every run with the same shapes; the sweep that compares the strategies is
:mod:`tljax.drivers.transfer_report`.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tljax import losses
from tljax import models
from tljax import params as params_lib
from tljax.methods import supervised
from tljax.train import state as state_lib
from tljax.train import trainer as trainer_lib

PyTree = Any


# ----------------------------------------------------------- layer transfer
def layer_names(layers) -> tuple[str, ...]:
  """The names of a backbone's layers, input to output: ``layers`` is a
  backbone (its ``layer_names``: ``layer_<i>`` for the MLP and the CNNs,
  ``stem, stage_1, ...`` for a ResNet), a sequence of names, or a number
  of ``layer_<i>`` layers."""
  if isinstance(layers, int):
    return tuple(f"layer_{i}" for i in range(layers))
  if hasattr(layers, "layer_names"):
    return tuple(layers.layer_names)
  return tuple(layers)


def layer_patterns(layers, k: int, which: str = "first", *,
                   prefix: str = "backbone") -> tuple[str, ...]:
  """Regexes naming the first or last ``k`` layers of a backbone.

  Args:
    layers: the backbone, its layer names, or its number of ``layer_<i>``
      layers (:func:`layer_names`).
    k: how many to name, ``0 <= k <=`` the number of layers.
    which: ``first`` (closest to the input) or ``last``.
    prefix: the backbone's top-level name in the parameter tree.

  Returns:
    One ``<prefix>/<layer name>/.*`` regex per layer.

  Raises:
    ValueError: on ``k`` out of range or an unknown ``which``.
  """
  names = layer_names(layers)
  num_layers = len(names)
  if which not in ("first", "last"):
    raise ValueError(f"which must be 'first' or 'last', got {which!r}")
  if not 0 <= k <= num_layers:
    raise ValueError(f"k must be in [0, {num_layers}] (the backbone has "
                     f"{num_layers} layers), got {k}")
  chosen = names[:k] if which == "first" else names[num_layers - k:]
  return tuple(f"{re.escape(prefix)}/{re.escape(n)}/.*" for n in chosen)


def _unflatten(flat: dict[str, Any]) -> PyTree:
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def transfer_layers(source_params: PyTree, init_params: PyTree,
                    patterns: Sequence[str]) -> PyTree:
  """Copies the leaves named by ``patterns`` from the source; keeps the rest.

  The copy is :func:`tljax.params.merge_params` with ``dont_load`` = every
  leaf outside ``patterns``, so a copied leaf missing from the source or of
  another shape raises one error naming it.

  Args:
    source_params: the pretrained parameters.
    init_params: freshly initialised parameters of the target model.
    patterns: regexes of leaves to copy (e.g. :func:`layer_patterns`).

  Returns:
    A tree shaped like ``init_params``.

  Raises:
    ValueError: if a pattern matches no target leaf, or a copied leaf is
      missing from the source or has another shape there.
  """
  if isinstance(patterns, str):
    patterns = (patterns,)
  patterns = tuple(patterns)
  if not patterns:
    return init_params
  params_lib.select_mask(init_params, patterns)  # raises on unused patterns
  keep = lambda n: any(re.fullmatch(p, n) for p in patterns)  # noqa: E731
  flat_src = dict(zip(params_lib.leaf_names(source_params),
                      jax.tree.leaves(source_params)))
  selected = _unflatten({n: v for n, v in flat_src.items() if keep(n)})
  others = "(?!(?:" + "|".join(patterns) + r")\Z).*"
  rest = any(not keep(n) for n in params_lib.leaf_names(init_params))
  return params_lib.merge_params(selected, init_params,
                                 dont_load=(others,) if rest else ())


def transfer_model_state(source_state: PyTree, init_state: PyTree,
                         patterns: Sequence[str]) -> PyTree:
  """:func:`transfer_layers` for the model state (BatchNorm statistics):
  each collection takes the leaves the ``patterns`` name from the source
  (patterns naming no statistics, e.g. a head's, are skipped)."""
  out = dict(init_state)
  for name, tree in init_state.items():
    names = params_lib.leaf_names(tree)
    used = [p for p in patterns if any(re.fullmatch(p, n) for n in names)]
    if used and name in source_state:
      out[name] = transfer_layers(source_state[name], tree, used)
  return out


def freeze_rules(patterns: Sequence[str], *, rest: float = 1.0
                 ) -> list[tuple[str, Any]]:
  """``lr_rules`` freezing ``patterns`` and training the rest at ``rest``x."""
  return [(p, None) for p in patterns] + [(".*", rest)]


def discriminative_lr_rules(layers, *, decay: float = 1 / 2.6,
                            rest: float = 1.0, prefix: str = "backbone"
                            ) -> list[tuple[str, float]]:
  """Per-layer learning-rate multipliers shrinking towards the input.

  ULMFiT's discriminative fine-tuning (Howard & Ruder, 2018): the top
  backbone layer gets ``decay``, the one below ``decay**2``, ... ; everything
  else (the head) gets ``rest``. Pass the result as ``lr_rules`` to
  :func:`tljax.optim.make_optimizer`.
  """
  if not 0 < decay <= 1:
    raise ValueError(f"decay must be in (0, 1], got {decay}")
  patterns = layer_patterns(layers, len(layer_names(layers)), prefix=prefix)
  return ([(p, float(decay ** (len(patterns) - i)))
           for i, p in enumerate(patterns)] + [(".*", rest)])


def gradual_unfreezing_stages(layers, num_steps: int, *,
                              prefix: str = "backbone",
                              layer_rate: float = 1.0
                              ) -> list[tuple[int, list[tuple[str, Any]]]]:
  """Stages of gradual unfreezing: head first, then one layer more each.

  ULMFiT (Howard & Ruder, 2018) unfreezes from the top: stage 0 trains only
  what is outside the backbone, stage ``j`` also the top ``j`` backbone
  layers, until all train. Each stage is a separate optimizer (its frozen
  leaves carry no state), so run them with :func:`train_in_stages`.

  Args:
    num_layers: backbone layers.
    num_steps: total steps, split evenly (the remainder goes to the last
      stage).
    prefix: the backbone's top-level name.
    layer_rate: learning-rate multiplier of unfrozen backbone layers.

  Returns:
    ``[(steps, lr_rules), ...]``, ``num_layers + 1`` stages.
  """
  num_layers = len(layer_names(layers))
  stages = num_layers + 1
  if num_steps < stages:
    raise ValueError(f"gradual unfreezing of {num_layers} layers needs at "
                     f"least {stages} steps, got {num_steps}")
  per = num_steps // stages
  out = []
  for j in range(stages):
    frozen = layer_patterns(layers, num_layers - j, "first", prefix=prefix)
    unfrozen = layer_patterns(layers, j, "last", prefix=prefix)
    rules = ([(p, None) for p in frozen] + [(p, layer_rate) for p in unfrozen]
             + [(".*", 1.0)])
    steps = per if j < stages - 1 else num_steps - per * (stages - 1)
    out.append((steps, rules))
  return out


# ------------------------------------------------- conservative training
def l2_sp_loss(params, state, batch, rng, *, model: nn.Module,
               shared_mask: PyTree, alpha: float = 0.1, beta: float = 0.01,
               freeze_bn: bool = False, axis_name=None):
  """Cross-entropy plus the L2-SP penalty (Li et al., 2018).

  ``state.extra['source_params']`` holds the starting point ``w^0`` in the
  structure of ``params`` (the transferred parameters before training);
  ``shared_mask`` (:func:`tljax.losses.l2_sp_shared_mask`) says which leaves
  come from the source. Metrics: ``accuracy``, ``ce``, ``l2_sp``.
  """
  ce, aux = supervised.classification_loss(params, state, batch, rng,
                                           model=model, freeze_bn=freeze_bn,
                                           axis_name=axis_name)
  metrics, model_state = state_lib.split_aux(aux, {})
  penalty = losses.l2_sp_penalty(params, state.extra["source_params"],
                                 shared_mask, alpha=alpha, beta=beta)
  return ce + penalty, state_lib.loss_aux(
      dict(metrics, ce=ce, l2_sp=penalty), model_state)


def lwf_params(params: PyTree, source_params: PyTree) -> PyTree:
  """Adds ``source_head``, a trainable copy of the source head, to ``params``.

  In LwF the shared trunk serves the old task through its old head and the
  new task through a new one; the old head trains too.
  """
  if "source_head" in params:
    raise ValueError("params already hold a 'source_head'")
  return dict(params, source_head=jax.tree.map(np.asarray,
                                               source_params["head"]))


def target_params(params: PyTree) -> PyTree:
  """``params`` without LwF's ``source_head`` (the target model alone)."""
  return {k: v for k, v in params.items() if k != "source_head"}


def lwf_loss(params, state, batch, rng, *, model: nn.Module,
             source_model: nn.Module, weight: float = 1.0,
             temperature: float = 2.0, freeze_bn: bool = False,
             axis_name=None):
  """Cross-entropy on the target plus the LwF penalty (Li & Hoiem, 2016).

  The frozen source model (``state.extra['source_params']``, and its
  ``state.extra['source_model_state']`` if it has BatchNorm, applied with
  ``source_model`` in inference mode) gives the recorded old-task outputs
  on the target inputs; the current trunk with the trainable
  ``params['source_head']`` gives the new ones. Metrics: ``accuracy``,
  ``ce``, ``lwf``.
  """
  x = batch["x"]
  h, model_state = models.apply_train(
      model, params, x, model_state=state_lib.model_state_of(state),
      train=not freeze_bn, rng=rng, method="features")
  logits = model.apply({"params": params}, h, method="logits_from_features")
  ce = losses.weighted_mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]),
      batch.get("w"), axis_name=axis_name)
  old = source_model.apply(
      {"params": {"head": params["source_head"]}}, h,
      method="logits_from_features")
  recorded = models.apply(source_model, state.extra["source_params"], x,
                          model_state=state.extra.get("source_model_state"))
  penalty = jnp.mean(losses.lwf_penalty(old, recorded,
                                        temperature=temperature))
  return ce + weight * penalty, state_lib.loss_aux(
      {"accuracy": losses.accuracy(logits, batch["y"]), "ce": ce,
       "lwf": penalty}, model_state)


def train_in_stages(params: PyTree, stages, *, make_step: Callable,
                    make_tx: Callable, arrays: dict[str, np.ndarray],
                    batch_size: int, seed: int, rng: jax.Array,
                    extra: PyTree | None = None,
                    model_state: PyTree | None = None,
                    trainers: dict | None = None, parallel: str = "auto"):
  """Trains through ``[(steps, lr_rules), ...]`` with a fresh optimizer each.

  Used for gradual unfreezing (:func:`gradual_unfreezing_stages`). The
  optimizer state restarts at each stage (its set of trainable leaves
  changes); the data order and the model state (BatchNorm statistics)
  continue where the last stage stopped.

  Args:
    params: initial parameters.
    stages: ``[(num_steps, lr_rules), ...]``.
    make_step: ``make_step(tx) -> step`` (e.g. :func:`make_step` with the
      model bound).
    make_tx: ``make_tx(params, lr_rules) -> optax.GradientTransformation``.
    arrays, batch_size, seed, rng: the data and randomness.
    extra: ``state.extra`` (e.g. ``source_params``).
    model_state: the model's initial state, if any.
    trainers: a dict to cache the compiled :class:`tljax.train.Trainer` of
      each stage across calls (keyed by stage index).
    parallel: the trainers' parallel mode.

  Returns:
    ``(state, metrics)``: the last stage's train state and last metrics.
  """
  trainers = {} if trainers is None else trainers
  done, metrics, state = 0, {}, None
  for i, (steps, rules) in enumerate(stages):
    if i not in trainers:
      tx = make_tx(params, rules)
      trainers[i] = trainer_lib.Trainer(make_step(tx), tx, parallel=parallel)
    state, metrics = trainers[i].train_from(
        params, arrays, batch_size=batch_size, num_steps=steps, seed=seed,
        rng=rng, extra=extra, model_state=model_state, start_step=done)
    params, model_state, done = state.params, state.model_state, done + steps
  return state, metrics


LOSSES = {"finetune": supervised.classification_loss, "l2_sp": l2_sp_loss,
          "lwf": lwf_loss}


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              loss: str = "finetune", **loss_kwargs):
  """The step of one fine-tuning loss: ``finetune`` (plain cross-entropy),
  ``l2_sp`` (:func:`l2_sp_loss`, needs ``shared_mask``) or ``lwf``
  (:func:`lwf_loss`, needs ``source_model``); ``loss_kwargs`` are that
  loss's settings."""
  if loss not in LOSSES:
    raise ValueError(f"unknown fine-tuning loss {loss!r}; choose one of "
                     f"{sorted(LOSSES)}")
  return state_lib.loss_step(LOSSES[loss], tx, model=model, **loss_kwargs)
