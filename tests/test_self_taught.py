"""Self-taught learning: the autoencoder loss against a numpy forward pass,
pretraining that learns low-rank structure, loading the encoder into a
classifier, and the clustering scores against hand/numpy calculations."""

from __future__ import annotations

import itertools

import chex
import jax
import numpy as np
import optax
import pytest

from tljax import models
from tljax.methods import self_taught as st
from tljax.train import trainer as trainer_lib


def _ae(code=3, hidden=(5,), decoder=(4,), shape=(6,)):
  return st.Autoencoder(models.MLP(tuple(hidden) + (code,)),
                        output_shape=shape, decoder_features=decoder)


def _np_code_and_recon(p, x):
  p = jax.tree.map(np.asarray, p)
  relu = lambda z: np.maximum(z, 0)  # noqa: E731
  h = x
  for i in range(len(p["backbone"])):
    h = relu(h @ p["backbone"][f"layer_{i}"]["kernel"]
             + p["backbone"][f"layer_{i}"]["bias"])
  code = h
  for i in range(len(p["decoder"]) - 1):
    h = relu(h @ p["decoder"][f"layer_{i}"]["kernel"]
             + p["decoder"][f"layer_{i}"]["bias"])
  return code, h @ p["decoder"]["out"]["kernel"] + p["decoder"]["out"]["bias"]


def test_reconstruction_loss_matches_numpy():
  model = _ae()
  params = models.init_params(model, (6,), 0)
  x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
  code, recon = _np_code_and_recon(params, x)
  loss, m = st.reconstruction_loss(params, None, {"x": x}, jax.random.key(0),
                                   model=model, sparsity=0.3)
  mse = np.mean((recon - x) ** 2)
  np.testing.assert_allclose(m["mse"], mse, rtol=1e-5)
  np.testing.assert_allclose(m["code_l1"], np.abs(code).mean(), rtol=1e-5)
  np.testing.assert_allclose(loss, mse + 0.3 * np.abs(code).mean(),
                             rtol=1e-5)
  # Denoising: the encoder sees x + noise, the target stays the clean x.
  key = jax.random.key(3)
  _, m_noisy = st.reconstruction_loss(params, None, {"x": x}, key,
                                      model=model, noise_std=0.5)
  noisy = x + 0.5 * np.asarray(jax.random.normal(key, x.shape))
  _, recon_noisy = _np_code_and_recon(params, noisy)
  np.testing.assert_allclose(m_noisy["mse"], np.mean((recon_noisy - x) ** 2),
                             rtol=1e-5)


def test_pretraining_learns_low_rank_data():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, 12))
  x = (rng.normal(size=(512, 3)) @ w).astype(np.float32)
  model = st.Autoencoder(models.MLP((32, 8)), output_shape=(12,),
                         decoder_features=(32,))
  params = models.init_params(model, (12,), 0)
  tx = optax.adam(3e-3)
  trainer = trainer_lib.Trainer(st.make_step(model, tx), tx, scan=True)
  state, m = trainer.train_from(params, {"x": x}, batch_size=64,
                                num_steps=600, seed=0, rng=jax.random.key(0))
  # Variance per coordinate is ~3; a 3-dim structure fits in an 8-dim code.
  assert m["mse"] < 0.05 * x.var(), m
  feats = st.encode(model, state.params, x)
  assert feats.shape == (512, 8)


def test_classifier_gets_the_encoder_and_a_fresh_head():
  model = _ae()
  params = models.init_params(model, (6,), 0)
  clf, cp = st.classifier_from_autoencoder(model, params, num_classes=4,
                                           example_shape=(6,), seed=1)
  assert sorted(cp) == ["backbone", "head"]
  chex.assert_trees_all_equal(cp["backbone"], params["backbone"])
  assert cp["head"]["kernel"].shape == (3, 4)
  x = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
  code, _ = _np_code_and_recon(params, x)
  np.testing.assert_allclose(
      clf.apply({"params": cp}, x, method="features"), code, rtol=1e-5)


def _np_ari(a, b):
  """Adjusted Rand index from the contingency table (Hubert & Arabie)."""
  comb2 = lambda n: n * (n - 1) / 2  # noqa: E731
  ua, ub = np.unique(a), np.unique(b)
  table = np.array([[np.sum((a == i) & (b == j)) for j in ub] for i in ua])
  index = comb2(table).sum()
  ra, rb = comb2(table.sum(1)).sum(), comb2(table.sum(0)).sum()
  expected = ra * rb / comb2(len(a))
  return (index - expected) / ((ra + rb) / 2 - expected)


def test_cluster_quality_by_hand():
  rng = np.random.default_rng(0)
  centers = np.array([[0, 0], [10, 0], [0, 10]], np.float64)
  blob = np.repeat(np.arange(3), 20)
  x = centers[blob] + 0.1 * rng.normal(size=(60, 2))
  # Labels that are the blobs under another naming: a perfect clustering.
  perfect = st.cluster_quality(x, (blob + 1) % 3, seed=0)
  assert perfect == {"ari": pytest.approx(1.0), "nmi": pytest.approx(1.0)}
  # Labels that split each blob in two: k-means (k=3) still finds the
  # blobs; the ARI is then the hand formula on blobs vs labels.
  labels = blob * 2 + (np.arange(60) % 2)
  got = st.cluster_quality(x, labels, num_clusters=3, seed=0)
  np.testing.assert_allclose(got["ari"], _np_ari(labels, blob), rtol=1e-9)
  # NMI (arithmetic mean) by hand: I(L;B) = H(B) = log 3, H(L) = log 6.
  np.testing.assert_allclose(got["nmi"], np.log(3) / ((np.log(3)
                                                       + np.log(6)) / 2),
                             rtol=1e-9)


def test_cluster_quality_bad_input():
  with pytest.raises(ValueError, match="one label each"):
    st.cluster_quality(np.zeros((5, 2)), np.zeros(4))
  with pytest.raises(ValueError, match="NaN"):
    st.cluster_quality(np.full((5, 2), np.nan), np.arange(5) % 2)
  with pytest.raises(ValueError, match="num_clusters"):
    st.cluster_quality(np.zeros((3, 2)), np.arange(3), num_clusters=5)


def test_pca_features_match_numpy_svd():
  rng = np.random.default_rng(0)
  train = rng.normal(size=(50, 5)) * np.array([5, 3, 1, 0.5, 0.1])
  x = rng.normal(size=(7, 5))
  got = st.pca_features(train, x, 2)
  _, _, vt = np.linalg.svd(train - train.mean(0), full_matrices=False)
  ref = (x - train.mean(0)) @ vt[:2].T
  for j, sign in itertools.product(range(2), [1]):
    s = np.sign(got[0, j] * ref[0, j]) * sign
    np.testing.assert_allclose(got[:, j], s * ref[:, j], rtol=1e-4,
                               atol=1e-5)
