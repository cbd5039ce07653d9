"""Property-based tests (hypothesis): the data-spec parser, the npz loader
and the rule matcher answer any input with a result or one clear error;
the losses are finite for finite inputs, zero where they must be, and
invariant where they must be."""

import os
import re
import tempfile

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax.numpy as jnp
import numpy as np

from tljax import data
from tljax import losses
from tljax import params as params_lib

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
# The triplet loss runs op by op here (eager, many small ops per call).
FEWER = settings(FAST, max_examples=15)
CLEAR_ERRORS = (ValueError, FileNotFoundError)


def _is_clear(e: Exception) -> bool:
  msg = str(e)
  return bool(msg) and "Traceback" not in msg and len(msg) < 1500


# ------------------------------------------------------------- data specs
SPEC = st.one_of(
    st.tuples(st.sampled_from(["moons", "digits", "mnist1d", "npz", "tfds",
                               "imagenet", ""]),
              st.text(st.characters(codec="ascii",
                                    exclude_characters="\x00/"),
                      max_size=12)).map(lambda t: ":".join(t)),
    st.text(max_size=20))


@FAST
@given(SPEC)
def test_any_data_spec_loads_or_is_one_clear_error(spec):
  if spec.startswith("tfds:") or spec.startswith("mnist1d:"):
    # Valid names load real data (slow or cached); the parser is the same.
    spec = spec.split(":")[0] + ":zz" + spec.split(":", 1)[1]
  try:
    ds = data.load(spec)
  except CLEAR_ERRORS as e:
    assert _is_clear(e), (spec, str(e)[:300])
    return
  assert len(ds) > 0 and np.all(np.isfinite(ds.x))
  assert ds.y is None or ds.y.shape == (len(ds),)


# -------------------------------------------------------------- npz files
NUMERIC = st.sampled_from([np.float32, np.float64, np.int32, np.int64,
                           np.uint8, np.bool_])
ARRAY = NUMERIC.flatmap(lambda dt: hnp.arrays(
    dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))


@FAST
@given(st.dictionaries(st.sampled_from(["x", "y", "x_test", "y_test",
                                        "num_classes", "extra"]), ARRAY,
                       max_size=5),
       st.sampled_from(["train", "test"]))
def test_any_npz_loads_consistently_or_is_one_clear_error(arrays, split):
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "a.npz")
    np.savez(path, **arrays)
    try:
      ds = data.load(f"npz:{path}", split)
    except CLEAR_ERRORS as e:
      assert _is_clear(e), (sorted(arrays), str(e)[:300])
      return
  assert ds.x.dtype == np.float32 and ds.x.ndim >= 2 and len(ds) > 0
  assert np.all(np.isfinite(ds.x))
  if ds.y is not None:
    assert ds.y.shape == (len(ds),) and ds.y.dtype == np.int32
    assert 0 <= ds.y.min() and ds.y.max() < ds.num_classes


# ------------------------------------------------------------ rule matcher
NAME = st.lists(st.sampled_from(["backbone", "head", "layer_0", "layer_1",
                                 "kernel", "bias"]),
                min_size=1, max_size=3).map("/".join)
REGEX = st.sampled_from([".*", "backbone/.*", "head/.*", ".*kernel",
                         "layer_[01]/.*", ".*/layer_1/.*", "head", "(", "[",
                         "backbone/layer_0/kernel", "nothing"])


@FAST
@given(st.lists(NAME, min_size=1, max_size=6, unique=True),
       st.lists(st.tuples(REGEX, st.integers(0, 3)), min_size=1, max_size=4))
def test_rules_match_first_wins_and_every_problem_is_an_error(names, rules):
  try:
    got = params_lib.match_rules(names, rules)
  except ValueError as e:
    assert _is_clear(e)
    bad_regex = any(r in ("(", "[") for r, _ in rules)
    # A reference: which names no rule covers, which rules cover nothing.
    ok = [r for r, _ in rules if r not in ("(", "[")]
    first = {n: next((i for i, (r, _) in enumerate(rules)
                      if r in ok and re.fullmatch(r, n)), None)
             for n in names}
    uncovered = [n for n, i in first.items() if i is None]
    unused = [i for i in range(len(rules))
              if i not in set(first.values())]
    assert bad_regex or uncovered or unused, (names, rules, str(e))
    return
  for n in names:
    i = next(i for i, (r, _) in enumerate(rules) if re.fullmatch(r, n))
    assert got[n] == (i, rules[i][1])
  assert {i for i, _ in got.values()} == set(range(len(rules)))


# -------------------------------------------------------------------- losses
EMB = hnp.arrays(np.float32, (12, 3), elements=st.floats(-10, 10, width=32))
LABELS = hnp.arrays(np.int32, (12,), elements=st.integers(0, 3))


@FEWER
@given(EMB, LABELS, st.sampled_from(["all", "hard", "semi_hard"]),
       st.sampled_from(["l2", "squared_l2", "cosine"]),
       st.floats(0.0, 2.0), st.permutations(list(range(12))))
def test_triplet_loss_is_finite_nonnegative_and_order_free(
    emb, y, mining, distance, margin, perm):
  loss = losses.triplet_loss(jnp.asarray(emb), jnp.asarray(y), margin=margin,
                             mining=mining, distance=distance)
  assert np.isfinite(loss) and loss >= 0
  perm = np.asarray(perm)
  again = losses.triplet_loss(jnp.asarray(emb[perm]), jnp.asarray(y[perm]),
                              margin=margin, mining=mining,
                              distance=distance)
  np.testing.assert_allclose(again, loss, rtol=1e-4, atol=1e-4)


@FEWER
@given(LABELS, st.sampled_from(["all", "hard", "semi_hard"]),
       st.floats(0.0, 1.0))
def test_triplet_loss_is_zero_when_classes_are_far_apart(y, mining, margin):
  # Every class a tight cluster, clusters 10 apart: no triplet is active.
  emb = np.stack([10.0 * y, np.zeros_like(y), np.zeros_like(y)], 1)
  loss = losses.triplet_loss(jnp.asarray(emb, jnp.float32), jnp.asarray(y),
                             margin=margin, mining=mining)
  assert float(loss) == 0.0


@FAST
@given(hnp.arrays(np.float32, (6, 2), elements=st.floats(-5, 5, width=32)),
       hnp.arrays(np.float32, (6, 2), elements=st.floats(-5, 5, width=32)),
       hnp.arrays(np.int32, (6,), elements=st.integers(0, 1)),
       st.floats(0.0, 1.0), st.floats(1.5, 4.0))
def test_contrastive_is_nonnegative_and_zero_within_the_margins(
    a, b, same, pos, neg):
  per = np.asarray(losses.contrastive_loss(jnp.asarray(a), jnp.asarray(b),
                                           jnp.asarray(same), pos_margin=pos,
                                           neg_margin=neg))
  assert np.all(np.isfinite(per)) and np.all(per >= 0)
  d = np.linalg.norm(a - b, axis=1)
  # clear of the margins by more than float32 rounding of the distance
  # (numpy's norm and the loss's safe square root differ by ~1e-6 there)
  inside = np.where(same == 1, d <= pos - 1e-3, d >= neg + 1e-3)
  assert np.all(per[inside] <= 1e-6)


@FAST
@given(hnp.arrays(np.float32, (5, 4), elements=st.floats(-5, 5, width=32)),
       hnp.arrays(np.int32, (5,), elements=st.integers(0, 3)),
       st.sampled_from(["max", "sum"]), st.floats(0.0, 2.0))
def test_hinge_ranking_is_nonnegative_and_zero_past_the_margin(
    scores, y, reduction, margin):
  per = np.asarray(losses.hinge_ranking_loss(
      jnp.asarray(scores), jnp.asarray(y), margin=margin,
      reduction=reduction))
  assert np.all(np.isfinite(per)) and np.all(per >= 0)
  lifted = scores.copy()
  lifted[np.arange(5), y] = scores.max(1) + margin + 1.0
  per = np.asarray(losses.hinge_ranking_loss(
      jnp.asarray(lifted), jnp.asarray(y), margin=margin,
      reduction=reduction))
  assert np.all(per == 0.0)


@FAST
@given(hnp.arrays(np.float32, (7,), elements=st.floats(-100, 100, width=32)),
       hnp.arrays(np.float32, (7,), elements=st.floats(0, 10, width=32)))
def test_weighted_mean_lies_between_the_values(v, w):
  m = float(losses.weighted_mean(jnp.asarray(v), jnp.asarray(w)))
  if w.sum() > 0:
    assert v.min() - 1e-3 <= m <= v.max() + 1e-3
  else:
    assert m == 0.0
