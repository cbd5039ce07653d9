"""The one reducer: weighted_mean by hand, and exact under pmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import losses


def test_weighted_mean_by_hand():
  v = jnp.array([1.0, 2.0, 4.0, 8.0])
  assert float(losses.weighted_mean(v)) == pytest.approx(15 / 4)
  w = jnp.array([1.0, 0.0, 3.0, 0.0])
  assert float(losses.weighted_mean(v, w)) == pytest.approx((1 + 12) / 4)
  # All-zero weights give 0, not NaN.
  assert float(losses.weighted_mean(v, jnp.zeros(4))) == 0.0
  with pytest.raises(ValueError, match="one entry per value"):
    losses.weighted_mean(v, jnp.ones(3))


def test_weighted_mean_is_the_global_one_after_pmean():
  """Each device's value, averaged over devices as train_step does, equals
  the weighted mean of the whole batch (numpy reference)."""
  n = jax.local_device_count()
  rng = np.random.default_rng(0)
  v = rng.normal(size=(n * 3,)).astype(np.float32)
  w = rng.uniform(0, 2, size=(n * 3,)).astype(np.float32)
  w[:3] = 0.0  # a device whose examples all weigh nothing
  per_device = jax.pmap(
      lambda a, b: jax.lax.pmean(losses.weighted_mean(a, b, axis_name="i"),
                                 "i"), axis_name="i")(
                                     v.reshape(n, 3), w.reshape(n, 3))
  np.testing.assert_allclose(per_device, np.sum(w * v) / np.sum(w),
                             rtol=1e-5)


def test_accuracy():
  logits = jnp.array([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
  assert float(losses.accuracy(logits, jnp.array([1, 1, 1]))) == \
      pytest.approx(2 / 3)
