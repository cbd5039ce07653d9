r"""Zero-shot learning: recognise classes never seen in training from a
description of each class (a vector of attributes).

Two families, both trained on the *seen* classes only and tested on held-out
*unseen* classes:

- ``dap``: direct attribute prediction (Lampert, Nickisch & Harmeling 2009,
  2014, "Attribute-Based Classification for Zero-Shot Visual Object
  Categorization"). A classifier with one sigmoid output per attribute
  (:class:`tljax.models.Classifier` with ``num_classes = M``), trained with
  :func:`tljax.losses.attribute_loss`; an input goes to the candidate class
  whose attribute signature is most probable (:func:`dap_scores`).
- ``embedding``: inputs and class descriptions in one space (DeViSE, Frome et
  al. 2013; ALE, Akata et al. 2015). :class:`ZeroShotEmbedder` maps an input
  to ``f(x)`` and a class's attributes to ``g(a_y)``; the score is
  ``f(x) . g(a_y)``, trained with :func:`tljax.losses.hinge_ranking_loss`
  over the seen classes; an unseen input goes to the class whose embedding
  scores highest (nearest by inner product).

Class descriptions for the embedded digit data sets (``digits``,
``mnist1d``, ``npz`` files with digit labels): :data:`SEVEN_SEGMENT`, the
segments a seven-segment display lights for each digit (7 binary,
objective attributes: a top, b upper right, c lower right, d bottom, e lower
left, f upper left, g middle; 6 with its top bar and 9 with its bottom bar),
plus one shape attribute ``closed_loop`` (the lit segments enclose a region:
0, 6, 8, 9), or your own matrix (``npz:<path>`` holding ``attributes`` of
shape ``(num_classes, M)``; :func:`class_attributes`).

  >>> import numpy as np
  >>> a, names = class_attributes("segments")
  >>> names[:3], a[7].tolist()
  (('a_top', 'b_upper_right', 'c_lower_right'), [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tljax import data as data_lib
from tljax import evaluation
from tljax import losses
from tljax import models
from tljax.train import state as state_lib

PyTree = Any
METHODS = ("dap", "embedding")

SEGMENT_NAMES = ("a_top", "b_upper_right", "c_lower_right", "d_bottom",
                 "e_lower_left", "f_upper_left", "g_middle")
# Segments lit for each digit on a seven-segment display.
SEVEN_SEGMENT = {0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg",
                 5: "acdfg", 6: "acdefg", 7: "abc", 8: "abcdefg", 9: "abcdfg"}
CLOSED_LOOP = (0, 6, 8, 9)


def class_attributes(spec: str = "segments+loop", num_classes: int = 10
                     ) -> tuple[np.ndarray, tuple[str, ...]]:
  """The class-attribute matrix ``(num_classes, M)`` and attribute names.

  Args:
    spec: ``segments`` (7 seven-segment attributes), ``segments+loop`` (plus
      ``closed_loop``), both for the 10 digits; or ``npz:<path>`` with an
      array ``attributes`` of shape ``(num_classes, M)`` and optionally
      ``names``.
    num_classes: the number of classes of the data set.

  Returns:
    ``(attributes float32, names)``.

  Raises:
    ValueError, FileNotFoundError: on an unknown spec, a missing file or
      key, a matrix of the wrong shape, or non-finite values.
  """
  if spec in ("segments", "segments+loop"):
    if num_classes != 10:
      raise ValueError(f"the {spec!r} descriptions are for the 10 digits, but "
                       f"the data set has {num_classes} classes; give your "
                       "own with descriptions=npz:<path>.")
    a = np.array([[float(s in SEVEN_SEGMENT[d]) for s in "abcdefg"]
                  for d in range(10)], np.float32)
    names = SEGMENT_NAMES
    if spec == "segments+loop":
      loop_col = np.array([[float(d in CLOSED_LOOP)] for d in range(10)],
                          np.float32)
      a, names = np.concatenate([a, loop_col], 1), names + ("closed_loop",)
    return a, names
  if spec.startswith("npz:"):
    return data_lib.load_attributes(spec[4:], num_classes)
  raise ValueError(f"unknown class descriptions {spec!r}; use segments, "
                   "segments+loop or npz:<path>")


def check_split(attributes: np.ndarray, seen: Sequence[int],
                unseen: Sequence[int], names: Sequence[str] | None = None):
  """Refuses seen/unseen class splits that zero-shot learning cannot use.

  Raises:
    ValueError: if the sets overlap, fewer than two seen or unseen classes
      are given, a class is out of range, two unseen classes have the same
      description (nothing could tell them apart), or an attribute has one
      value on every seen class (nothing could learn it).
  """
  a = np.asarray(attributes)
  c = a.shape[0]
  seen, unseen = [int(s) for s in seen], [int(u) for u in unseen]
  names = list(names) if names is not None else [f"attr_{i}"
                                                 for i in range(a.shape[1])]
  if set(seen) & set(unseen):
    raise ValueError(f"seen classes {seen} and unseen classes {unseen} "
                     "overlap; zero-shot classes must never be trained on.")
  if len(seen) < 2 or len(unseen) < 2:
    raise ValueError(f"need at least two seen and two unseen classes; got "
                     f"seen={seen}, unseen={unseen}.")
  bad = [k for k in seen + unseen if not 0 <= k < c]
  if bad:
    raise ValueError(f"classes {bad} are not in [0, {c}).")
  for i, u in enumerate(unseen):
    for v in unseen[i + 1:]:
      if np.array_equal(a[u], a[v]):
        raise ValueError(f"unseen classes {u} and {v} have the same "
                         "description; no zero-shot method can tell them "
                         "apart. Choose other unseen classes or richer "
                         "descriptions.")
  const = [names[m] for m in range(a.shape[1])
           if np.ptp(a[seen, m]) == 0 and np.ptp(a[unseen, m]) > 0]
  if const:
    raise ValueError(f"attributes {const} take one value on every seen class "
                     f"{seen} but differ among the unseen ones, so nothing "
                     "can learn them; move a class that differs in them from "
                     "the unseen to the seen set.")


# ----------------------------------------------------------------- models
class ClassEncoder(nn.Module):
  """``g(a)``: class attributes to the joint space (linear by default, as in
  ALE's bilinear compatibility; ``hidden`` adds relu layers)."""
  dim: int
  hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, a):
    return nn.Dense(self.dim, name="out")(models.dense_layers(a, self.hidden))


class ZeroShotEmbedder(nn.Module):
  """``f(x) = head(backbone(x))`` and ``g(a) = class_encoder(a)``; calling
  it gives the scores ``f(x) @ g(A).T``. Parameters ``backbone``, ``head``,
  ``class_encoder`` (a classifier's backbone loads with
  ``dont_load=('head/.*', 'class_encoder/.*')``)."""
  backbone: nn.Module
  dim: int = 32
  class_hidden: Sequence[int] = ()
  normalize: bool = False

  def setup(self):
    self.head = nn.Dense(self.dim)
    self.class_encoder = ClassEncoder(self.dim, tuple(self.class_hidden))

  def _norm(self, e):
    if not self.normalize:
      return e
    return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)

  def embed_inputs(self, x, *, train: bool = False):
    return self._norm(self.head(self.backbone(x, train=train)))

  def embed_classes(self, class_attributes):
    return self._norm(self.class_encoder(class_attributes))

  def __call__(self, x, class_attributes, *, train: bool = False):
    return self.embed_inputs(x, train=train) @ self.embed_classes(
        class_attributes).T


def build_model(method: str, model_config, example_shape, *,
                num_attributes: int, dim: int = 32,
                class_hidden: Sequence[int] = (),
                normalize: bool = False,
                modality: str | None = None) -> nn.Module:
  """The DAP attribute classifier or the :class:`ZeroShotEmbedder` on the
  backbone ``model_config`` names (:func:`tljax.models.backbone_from_config`).
  """
  if method not in METHODS:
    raise ValueError(f"unknown zero-shot method {method!r}; choose one of "
                     f"{METHODS}")
  backbone = models.backbone_from_config(model_config, example_shape,
                                         modality)
  if method == "dap":
    return models.Classifier(backbone, num_classes=num_attributes)
  return ZeroShotEmbedder(backbone, dim=dim, class_hidden=tuple(class_hidden),
                          normalize=normalize)


def example_inputs(model: nn.Module, num_attributes: int) -> tuple:
  """The inputs after ``x`` that ``model`` takes (for
  :func:`tljax.models.init_params`): a class-attribute matrix for the
  :class:`ZeroShotEmbedder`, nothing for the DAP classifier."""
  if isinstance(model, ZeroShotEmbedder):
    return (jnp.zeros((2, num_attributes), jnp.float32),)
  return ()


# ----------------------------------------------------------------- losses
def dap_loss(params, state, batch, rng, *, model: nn.Module, axis_name=None):
  """Attribute cross-entropy: ``batch['y']`` indexes the rows of
  ``state.extra['class_attributes']`` (the seen classes' descriptions,
  carried in the state so that one compiled step serves every class split).
  Metrics: ``attribute_accuracy``."""
  del axis_name
  logits, model_state = models.apply_train(
      model, params, batch["x"], model_state=state_lib.model_state_of(state),
      rng=rng)
  targets = state.extra["class_attributes"][batch["y"]]
  loss = jnp.mean(losses.attribute_loss(logits, targets))
  acc = jnp.mean((logits > 0) == (targets > 0.5))
  return loss, state_lib.loss_aux({"attribute_accuracy": acc}, model_state)


def embedding_loss(params, state, batch, rng, *, model: ZeroShotEmbedder,
                   margin: float = 1.0, reduction: str = "max",
                   axis_name=None):
  """Hinge ranking loss of ``f(x) . g(a_y)`` over the seen classes
  (``batch['y']`` indexes the rows of ``state.extra['class_attributes']``).
  Metrics: ``accuracy`` among the seen classes."""
  del axis_name
  scores, model_state = models.apply_train(
      model, params, batch["x"], state.extra["class_attributes"],
      model_state=state_lib.model_state_of(state), rng=rng)
  loss = jnp.mean(losses.hinge_ranking_loss(scores, batch["y"],
                                            margin=margin,
                                            reduction=reduction))
  return loss, state_lib.loss_aux(
      {"accuracy": losses.accuracy(scores, batch["y"])}, model_state)


LOSSES = {"dap": dap_loss, "embedding": embedding_loss}


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              method: str, **loss_kwargs):
  """The step of :func:`dap_loss` (``method='dap'``) or
  :func:`embedding_loss` (``'embedding'``; ``margin``, ``reduction``). The
  train state carries the seen classes' descriptions:
  ``create_train_state(params, tx, extra={'class_attributes': A_seen})``."""
  if method not in LOSSES:
    raise ValueError(f"unknown zero-shot method {method!r}; choose one of "
                     f"{METHODS}")
  return state_lib.loss_step(LOSSES[method], tx, model=model, **loss_kwargs)


# ---------------------------------------------------------------- scoring
def dap_scores(attribute_probs, class_attributes, *, priors=None,
               eps: float = 1e-6) -> jax.Array:
  """DAP log-scores of every class (Lampert et al. 2014, eq. 2).

  ``log p(z | x) = sum_m log p(a_m = a^z_m | x) - sum_m log p(a_m = a^z_m)
  + const``, where ``p(a_m = 1 | x)`` are the predicted attribute
  probabilities and ``p(a_m = 1)`` the attribute priors (Lampert et al. use
  the mean over the training classes; ``None`` means 0.5 each, a constant
  that drops out). Soft attributes ``a^z_m`` in ``[0, 1]`` weigh both terms.

  Args:
    attribute_probs: ``(n, M)`` probabilities ``p(a_m = 1 | x)``.
    class_attributes: ``(C, M)`` class signatures.
    priors: ``(M,)`` attribute priors, or ``None``.
    eps: probabilities are clipped to ``[eps, 1 - eps]``.

  Returns:
    ``(n, C)`` log-scores; the predicted class is their argmax.

  Raises:
    ValueError: if the attribute dimensions disagree.
  """
  p = jnp.asarray(attribute_probs)
  a = jnp.asarray(class_attributes, p.dtype)
  if p.ndim != 2 or a.ndim != 2 or p.shape[1] != a.shape[1]:
    raise ValueError(f"dap_scores: attribute_probs (n, M) and "
                     f"class_attributes (C, M) must agree in M; got "
                     f"{p.shape} and {a.shape}.")
  p = jnp.clip(p, eps, 1 - eps)
  scores = jnp.log(p) @ a.T + jnp.log1p(-p) @ (1 - a).T
  if priors is not None:
    pr = jnp.clip(jnp.asarray(priors, p.dtype), eps, 1 - eps)
    if pr.shape != (a.shape[1],):
      raise ValueError(f"dap_scores: priors must have shape ({a.shape[1]},); "
                       f"got {pr.shape}.")
    scores = scores - (a @ jnp.log(pr) + (1 - a) @ jnp.log1p(-pr))[None, :]
  return scores


def class_scores(method: str, model: nn.Module, params: PyTree,
                 x: np.ndarray, class_attributes: np.ndarray, *,
                 priors=None, model_state: PyTree | None = None
                 ) -> np.ndarray:
  """``(n, C)`` scores of every class in ``class_attributes`` for ``x``."""
  if method == "dap":
    logits = evaluation.predict(model, params, x, model_state=model_state)
    return np.asarray(dap_scores(jax.nn.sigmoid(logits), class_attributes,
                                 priors=priors))
  emb = evaluation.predict(model, params, x, model_state=model_state,
                           method="embed_inputs")
  cls = model.apply({"params": params}, jnp.asarray(class_attributes),
                    method="embed_classes")
  return emb @ np.asarray(cls).T


def predict_among(scores: np.ndarray, candidates: Sequence[int]
                  ) -> np.ndarray:
  """The class id (from ``candidates``) with the highest score per row."""
  candidates = np.asarray(candidates)
  return candidates[np.argmax(np.asarray(scores)[:, candidates], axis=1)]


def per_class_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
  """Mean over the true classes of each class's accuracy (the ZSL standard
  of Xian et al. 2018, robust to class imbalance)."""
  return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def evaluate(method: str, model: nn.Module, params: PyTree, *,
             class_attributes: np.ndarray, seen: Sequence[int],
             unseen: Sequence[int], unseen_x: np.ndarray,
             unseen_y: np.ndarray, seen_x: np.ndarray, seen_y: np.ndarray,
             priors=None, model_state: PyTree | None = None
             ) -> dict[str, Any]:
  """Zero-shot (unseen only) and generalized zero-shot (all classes)
  accuracies; ``*_y`` hold original class ids."""
  s_u = class_scores(method, model, params, unseen_x, class_attributes,
                     priors=priors, model_state=model_state)
  s_s = class_scores(method, model, params, seen_x, class_attributes,
                     priors=priors, model_state=model_state)
  pred_u = predict_among(s_u, unseen)
  every = sorted(set(seen) | set(unseen))
  g_u = float(np.mean(predict_among(s_u, every) == unseen_y))
  g_s = float(np.mean(predict_among(s_s, every) == seen_y))
  out = {"unseen_accuracy": float(np.mean(pred_u == unseen_y)),
         "unseen_per_class_accuracy": per_class_accuracy(pred_u, unseen_y),
         "seen_accuracy": float(np.mean(predict_among(s_s, seen) == seen_y)),
         "gzsl_unseen_accuracy": g_u, "gzsl_seen_accuracy": g_s,
         "gzsl_harmonic_mean": (2 * g_u * g_s / (g_u + g_s)
                                if g_u + g_s > 0 else 0.0)}
  confusion = np.zeros((len(unseen), len(unseen)), np.int64)
  idx = {c: i for i, c in enumerate(unseen)}
  for t, p in zip(unseen_y, pred_u):
    confusion[idx[int(t)], idx[int(p)]] += 1
  out["unseen_confusion"] = confusion
  return out


def random_split(attributes: np.ndarray, num_unseen: int, seed: int, *,
                 names: Sequence[str] | None = None, max_tries: int = 1000
                 ) -> tuple[list[int], list[int]]:
  """A random ``(seen, unseen)`` class split that :func:`check_split`
  accepts, drawn with ``seed``.

  Raises:
    ValueError: if ``num_unseen`` leaves fewer than two classes on either
      side, or no valid split turns up in ``max_tries`` draws.
  """
  c = int(np.shape(attributes)[0])
  if not 2 <= num_unseen <= c - 2:
    raise ValueError(f"num_unseen must be in [2, {c - 2}] for {c} classes, "
                     f"got {num_unseen}")
  rng = np.random.default_rng(seed)
  for _ in range(max_tries):
    unseen = sorted(int(u) for u in rng.choice(c, num_unseen, replace=False))
    seen = [k for k in range(c) if k not in unseen]
    try:
      check_split(attributes, seen, unseen, names)
    except ValueError:
      continue
    return seen, unseen
  raise ValueError(f"no valid split with {num_unseen} unseen classes in "
                   f"{max_tries} draws; use fewer unseen classes or richer "
                   "descriptions.")
