"""L2-SP, distillation and LwF losses against hand and numpy computations."""

from __future__ import annotations

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import losses


def _small_tree():
  params = {"backbone": {"layer_0": {"kernel": jnp.array([[1.0, 2.0]]),
                                     "bias": jnp.array([0.5])}},
            "head": {"kernel": jnp.array([[3.0], [-1.0]])}}
  source = {"backbone": {"layer_0": {"kernel": jnp.array([[0.0, 4.0]]),
                                     "bias": jnp.array([0.5])}},
            # the source head is ignored (not shared): any values.
            "head": {"kernel": jnp.array([[100.0], [100.0]])}}
  return params, source


def test_l2_sp_penalty_by_hand():
  params, source = _small_tree()
  mask = losses.l2_sp_shared_mask(params)
  assert mask == {"backbone": {"layer_0": {"kernel": True, "bias": True}},
                  "head": {"kernel": False}}
  # shared: (1-0)^2 + (2-4)^2 + 0 = 5; new: 3^2 + 1^2 = 10.
  got = losses.l2_sp_penalty(params, source, mask, alpha=0.2, beta=0.06)
  np.testing.assert_allclose(got, 0.1 * 5 + 0.03 * 10, rtol=1e-6)


def test_l2_sp_gradient_by_hand():
  params, source = _small_tree()
  mask = losses.l2_sp_shared_mask(params)
  g_params, g_source = jax.grad(
      lambda p, s: losses.l2_sp_penalty(p, s, mask, alpha=0.2, beta=0.06),
      argnums=(0, 1))(params, source)
  # d/dw_S = alpha (w_S - w_S^0); d/dw_new = beta w_new.
  want = {"backbone": {"layer_0": {"kernel": np.array([[0.2, -0.4]]),
                                   "bias": np.array([0.0])}},
          "head": {"kernel": np.array([[0.18], [-0.06]])}}
  chex.assert_trees_all_close(g_params, want, rtol=1e-6, atol=1e-7)
  # The source model is a constant.
  chex.assert_trees_all_close(
      g_source, jax.tree.map(np.zeros_like, source))


def test_l2_sp_custom_rules_share_the_head_too():
  params, source = _small_tree()
  mask = losses.l2_sp_shared_mask(params, [(".*", True)])
  got = losses.l2_sp_penalty(params, source, mask, alpha=2.0, beta=5.0)
  # everything shared: 5 + (3-100)^2 + (-1-100)^2.
  np.testing.assert_allclose(got, 5 + 97 ** 2 + 101 ** 2, rtol=1e-6)


def test_l2_sp_rules_must_cover_every_leaf():
  params, _ = _small_tree()
  with pytest.raises(ValueError, match="no rule covers"):
    losses.l2_sp_shared_mask(params, [("backbone/.*", True)])


def _np_softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


_RNG = np.random.default_rng(0)
_S = _RNG.normal(size=(5, 4)).astype(np.float32) * 2
_T = _RNG.normal(size=(5, 4)).astype(np.float32) * 2


class DistillationTest(parameterized.TestCase):

  @parameterized.named_parameters(("t1", 1.0), ("t2", 2.0), ("t5", 5.0))
  def test_kl_matches_numpy(self, temp):
    p = _np_softmax(_T / temp)
    q = _np_softmax(_S / temp)
    want = temp ** 2 * np.sum(p * (np.log(p) - np.log(q)), -1)
    got = losses.distillation_kl(jnp.asarray(_S), jnp.asarray(_T),
                                 temperature=temp)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

  @parameterized.named_parameters(("t1", 1.0), ("t4", 4.0))
  def test_kl_gradient_matches_numpy(self, temp):
    # d/ds of T^2 KL(p || softmax(s/T)) averaged over n: T (q - p) / n.
    p = _np_softmax(_T / temp)
    q = _np_softmax(_S / temp)
    want = temp * (q - p) / len(_S)
    g_s, g_t = jax.grad(
        lambda s, t: losses.distillation_kl(s, t, temperature=temp).mean(),
        argnums=(0, 1))(jnp.asarray(_S), jnp.asarray(_T))
    np.testing.assert_allclose(g_s, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(g_t, np.zeros_like(_T))

  def test_kl_is_zero_for_equal_logits(self):
    np.testing.assert_allclose(
        losses.distillation_kl(jnp.asarray(_S), jnp.asarray(_S),
                               temperature=3.0), 0.0, atol=1e-6)

  @parameterized.named_parameters(("t1", 1.0), ("t2", 2.0))
  def test_lwf_matches_numpy(self, temp):
    p = _np_softmax(_T / temp)
    q = _np_softmax(_S / temp)
    want = -np.sum(p * np.log(q), -1)
    got = losses.lwf_penalty(jnp.asarray(_S), jnp.asarray(_T),
                             temperature=temp)
    np.testing.assert_allclose(got, want, rtol=1e-5)

  def test_lwf_gradient_matches_numpy(self):
    # d/ds of -mean sum p log softmax(s/T): (q - p) / (T n).
    temp = 2.0
    p = _np_softmax(_T / temp)
    q = _np_softmax(_S / temp)
    g = jax.grad(lambda s: losses.lwf_penalty(s, jnp.asarray(_T),
                                              temperature=temp).mean())(
                                                  jnp.asarray(_S))
    np.testing.assert_allclose(g, (q - p) / (temp * len(_S)), rtol=1e-4,
                               atol=1e-6)

  @parameterized.named_parameters(
      ("kl", losses.distillation_kl), ("lwf", losses.lwf_penalty))
  def test_bad_inputs_raise(self, fn):
    with self.assertRaisesRegex(ValueError, "same shape"):
      fn(jnp.zeros((3, 4)), jnp.zeros((3, 5)))
    with self.assertRaisesRegex(ValueError, "temperature"):
      fn(jnp.zeros((3, 4)), jnp.zeros((3, 4)), temperature=0.0)
