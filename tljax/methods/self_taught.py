r"""Self-taught learning and clustering of learned features.

Self-taught learning (Raina, Battle, Lee, Packer & Ng 2007, "Self-taught
Learning: Transfer Learning from Unlabeled Data"): learn a representation
from plentiful *unlabelled* data that need not share the target's classes
or distribution, then reuse it on a labelled target task with few labels.
Raina et al. learn sparse codes; here the representation is the code layer
of a (denoising, optionally sparse) autoencoder (Vincent et al. 2008),
trained with :func:`reconstruction_loss` in the shared step shape. Its
encoder is an ordinary backbone (parameters ``backbone``), so it loads into
a :class:`tljax.models.Classifier` (``backbone`` loaded, a new ``head``;
:func:`classifier_from_autoencoder`).

The experiment (``experiments/self_taught.py``,
:mod:`tljax.drivers.self_taught`) compares on the target, for each label
budget and seed:

====================  =======================================================
raw_linear            a linear classifier on the raw inputs
random_linear         a linear classifier on a frozen, untrained encoder
self_taught_linear    a linear classifier on the frozen pretrained encoder
                      (Raina et al.'s protocol)
scratch               encoder + head trained from random initialisation
self_taught_finetune  pretrained encoder + head, everything trained
====================  =======================================================

and clusters the target test set with k-means (scikit-learn) on raw inputs,
their PCA, untrained and pretrained encoder features, scoring each
clustering against the true labels with the adjusted Rand index and NMI
(:func:`cluster_quality`).

  >>> import numpy as np
  >>> x = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 5]
  >>> y = np.r_[np.zeros(5, int), np.ones(5, int)]
  >>> cluster_quality(x, y, num_clusters=2)["ari"]
  1.0
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tljax import evaluation
from tljax import models
from tljax import params as params_lib
from tljax.train import state as state_lib

PyTree = Any


class Decoder(nn.Module):
  """Dense relu layers ``layer_<i>``, then a linear ``out`` layer reshaped
  to ``output_shape``."""
  output_shape: Sequence[int]
  features: Sequence[int] = (128,)

  @nn.compact
  def __call__(self, h):
    h = models.dense_layers(h, self.features)
    out = nn.Dense(int(np.prod(self.output_shape)), name="out")(h)
    return out.reshape((h.shape[0],) + tuple(self.output_shape))


class Autoencoder(nn.Module):
  """``decoder(backbone(x))``; parameters ``backbone`` and ``decoder``.

  ``model.apply(v, x, method='encode')`` gives the code (the features that
  are reused).
  """
  backbone: nn.Module
  output_shape: Sequence[int]
  decoder_features: Sequence[int] = (128,)

  def setup(self):
    self.decoder = Decoder(tuple(self.output_shape),
                           tuple(self.decoder_features))

  def encode(self, x, *, train: bool = False):
    return self.backbone(x, train=train)

  def decode(self, code):
    return self.decoder(code)

  def __call__(self, x, *, train: bool = False):
    return self.decode(self.encode(x, train=train))


def reconstruction_loss(params, state, batch, rng, *, model: Autoencoder,
                        noise_std: float = 0.0, sparsity: float = 0.0,
                        axis_name=None):
  """Mean squared reconstruction error of ``batch['x']`` (labels, if any,
  are ignored).

  With ``noise_std > 0`` the encoder sees ``x + noise_std * N(0, 1)`` and the
  decoder must give back the clean ``x`` (a denoising autoencoder, Vincent et
  al. 2008); ``sparsity`` adds ``sparsity * mean |code|`` (an L1 penalty on
  the code, in the spirit of Raina et al.'s sparse coding). Metrics:
  ``mse``, ``code_l1``.
  """
  del axis_name
  x = batch["x"]
  noisy = x
  if noise_std:
    noisy = x + noise_std * jax.random.normal(rng, x.shape, x.dtype)
  code, model_state = models.apply_train(
      model, params, noisy, model_state=state_lib.model_state_of(state),
      rng=jax.random.fold_in(rng, 1), method="encode")
  recon = model.apply({"params": params}, code, method="decode")
  mse = jnp.mean((recon - x) ** 2)
  code_l1 = jnp.mean(jnp.abs(code))
  return mse + sparsity * code_l1, state_lib.loss_aux(
      {"mse": mse, "code_l1": code_l1}, model_state)


def make_step(model: Autoencoder, tx: optax.GradientTransformation, *,
              noise_std: float = 0.0, sparsity: float = 0.0):
  """The step of :func:`reconstruction_loss`."""
  return state_lib.loss_step(reconstruction_loss, tx, model=model,
                             noise_std=noise_std, sparsity=sparsity)


def classifier_from_autoencoder(model: Autoencoder, params: PyTree, *,
                                num_classes: int, example_shape,
                                seed: int) -> tuple[models.Classifier, PyTree]:
  """A classifier on the autoencoder's encoder, its backbone loaded from
  ``params`` and a fresh head."""
  clf = models.Classifier(model.backbone, num_classes=num_classes)
  init = models.init_params(clf, example_shape, seed)
  return clf, params_lib.merge_params({"backbone": params["backbone"]}, init,
                                      dont_load=("head/.*",))


def encode(model: Autoencoder, params: PyTree, x: np.ndarray, *,
           model_state: PyTree | None = None) -> np.ndarray:
  """The code (features) of every example of ``x``."""
  return evaluation.predict(model, params, x, model_state=model_state,
                            method="encode")


def cluster_quality(features: np.ndarray, labels: np.ndarray, *,
                    num_clusters: int | None = None, seed: int = 0,
                    n_init: int = 10) -> dict[str, float]:
  """k-means (scikit-learn) on ``features``, scored against ``labels``.

  Args:
    features: ``(n, ...)`` features (flattened to ``(n, d)``).
    labels: ``(n,)`` true classes.
    num_clusters: ``k``; default the number of distinct labels.
    seed: k-means seed.
    n_init: k-means restarts (the best inertia is kept).

  Returns:
    ``{'ari': adjusted Rand index, 'nmi': normalized mutual information}``
    (Hubert & Arabie 1985; Strehl & Ghosh 2002); 1 is a perfect match, ARI
    is about 0 for a random assignment.

  Raises:
    ValueError: on mismatched lengths, non-finite features, or fewer
      examples than clusters.
  """
  from sklearn import cluster  # pylint: disable=g-import-not-at-top
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  f = np.asarray(features, np.float64)
  y = np.asarray(labels)
  if f.ndim < 2 or y.shape != (f.shape[0],):
    raise ValueError(f"cluster_quality: features must be (n, ...) with one "
                     f"label each; got features {f.shape}, labels {y.shape}.")
  f = f.reshape(len(f), -1)
  if not np.all(np.isfinite(f)):
    raise ValueError("cluster_quality: features contain NaN or Inf.")
  k = int(num_clusters or len(np.unique(y)))
  if not 2 <= k <= len(f):
    raise ValueError(f"cluster_quality: need 2 <= num_clusters <= n "
                     f"examples; got {k} clusters for {len(f)} examples.")
  assign = cluster.KMeans(n_clusters=k, n_init=n_init,
                          random_state=seed).fit_predict(f)
  return {"ari": float(metrics.adjusted_rand_score(y, assign)),
          "nmi": float(metrics.normalized_mutual_info_score(y, assign))}


def pca_features(train_x: np.ndarray, x: np.ndarray, n_components: int
                 ) -> np.ndarray:
  """``x`` projected on the leading principal components of ``train_x``."""
  from sklearn import decomposition  # pylint: disable=g-import-not-at-top
  flat = lambda a: np.asarray(a, np.float64).reshape(len(a), -1)  # noqa: E731
  pca = decomposition.PCA(n_components=n_components, random_state=0)
  return pca.fit(flat(train_x)).transform(flat(x)).astype(np.float32)
