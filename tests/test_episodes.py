"""Episode samplers, class-aware batches and the sinusoid task family."""

from __future__ import annotations

import numpy as np
import pytest

from tljax import data
from tljax.data import episodes


def _toy(num_classes=6, per_class=9, shape=(3,)):
  """Each example's value encodes its index, so indices can be recovered."""
  n = num_classes * per_class
  y = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
  x = np.broadcast_to(np.arange(n, dtype=np.float32).reshape(
      (n,) + (1,) * len(shape)), (n,) + shape).copy()
  return data.Dataset(x=x, y=y, num_classes=num_classes, name="toy")


def test_support_and_query_sizes_and_labels():
  ds = _toy()
  s = episodes.EpisodeSampler(ds, n_way=4, k_shot=3, n_query=2, seed=0)
  for i in range(20):
    ep = s.episode(i)
    assert ep["support_x"].shape == (12, 3)  # exactly N * K
    assert ep["query_x"].shape == (8, 3)
    np.testing.assert_array_equal(ep["support_y"], np.repeat(np.arange(4), 3))
    np.testing.assert_array_equal(ep["query_y"], np.repeat(np.arange(4), 2))
    # Episode label j is class ep['classes'][j] in the original labels.
    sidx = ep["support_x"][:, 0].astype(int)
    qidx = ep["query_x"][:, 0].astype(int)
    np.testing.assert_array_equal(ds.y[sidx], ep["classes"][ep["support_y"]])
    np.testing.assert_array_equal(ds.y[qidx], ep["classes"][ep["query_y"]])
    # Support and query never share an example; classes are distinct.
    assert not set(sidx) & set(qidx)
    assert len(set(sidx)) == 12 and len(set(ep["classes"].tolist())) == 4


def test_seeded_and_resumable():
  ds = _toy()
  a = episodes.EpisodeSampler(ds, n_way=3, k_shot=1, n_query=2, seed=5)
  b = episodes.EpisodeSampler(ds, n_way=3, k_shot=1, n_query=2, seed=5)
  c = episodes.EpisodeSampler(ds, n_way=3, k_shot=1, n_query=2, seed=6)
  it = b.batches(4, start_step=3)
  np.testing.assert_array_equal(next(it)["support_x"],
                                a.batch(3, 4)["support_x"])
  assert not np.array_equal(a.episode(0)["support_x"],
                            c.episode(0)["support_x"])
  batch = a.batch(0, 4)
  assert batch["support_x"].shape == (4, 3, 3)
  assert batch["query_y"].shape == (4, 6)
  # The episode labels' classes vary from episode to episode.
  assert len({tuple(a.episode(i)["classes"]) for i in range(30)}) > 5


def test_meta_split_never_mixes_train_and_test_classes():
  train_ds, test_ds = data.load("digits"), data.load("digits", "test")
  tr_cls, te_cls = episodes.split_classes(10, 5, seed=3)
  assert sorted(tr_cls + te_cls) == list(range(10))
  train, test = episodes.meta_split(
      train_ds, test_ds, train_classes=tr_cls, test_classes=te_cls, n_way=3,
      k_shot=2, n_query=4, test_k_shot=5)
  seen_tr, seen_te = set(), set()
  for i in range(100):
    ep = train.episode(i)
    seen_tr |= set(ep["classes"].tolist())
    ep_te = test.episode(i)
    seen_te |= set(ep_te["classes"].tolist())
    assert ep_te["support_x"].shape[0] == 3 * 5
  assert seen_tr == set(tr_cls) and seen_te == set(te_cls)
  # Check through the data too: every support/query image of a test episode
  # is an image of a held-out class in the test split.
  ep = test.episode(7)
  _, s, q = test.episode_indices(7)
  assert set(test_ds.y[s.ravel()].tolist()) <= set(te_cls)
  assert set(test_ds.y[q.ravel()].tolist()) <= set(te_cls)
  np.testing.assert_array_equal(ep["support_x"], test_ds.x[s.ravel()])


def test_meta_split_rejects_overlap():
  ds = _toy()
  with pytest.raises(ValueError, match="disjoint.*\\[2\\]"):
    episodes.meta_split(ds, ds, train_classes=[0, 1, 2], test_classes=[2, 3],
                        n_way=2, k_shot=1, n_query=1)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(n_way=7, k_shot=1, n_query=1), "n_way=7 but only 6 classes"),
    (dict(n_way=2, k_shot=5, n_query=5), "too few examples"),
    (dict(n_way=1, k_shot=1, n_query=1), "n_way must be an integer >= 2"),
    (dict(n_way=2, k_shot=0, n_query=1), "k_shot must be"),
    (dict(n_way=2, k_shot=1, n_query=1, classes=[]), "class set is empty"),
])
def test_bad_episode_settings_raise(kwargs, msg):
  with pytest.raises(ValueError, match=msg):
    episodes.EpisodeSampler(_toy(), **kwargs)


def test_nan_inputs_raise():
  ds = _toy()
  ds.x[3, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    episodes.EpisodeSampler(ds, n_way=2, k_shot=1, n_query=1)


def test_unlabelled_raises():
  ds = data.Dataset(x=np.zeros((4, 2), np.float32), y=None, num_classes=None,
                    name="u")
  with pytest.raises(ValueError, match="no labels"):
    episodes.EpisodeSampler(ds, n_way=2, k_shot=1, n_query=1)


def test_class_balanced_batches():
  ds = _toy()
  it = episodes.class_balanced_batches(ds, classes_per_batch=3,
                                       examples_per_class=4, seed=1,
                                       classes=[0, 2, 4, 5])
  for _ in range(10):
    b = next(it)
    assert b["x"].shape == (12, 3)
    counts = np.bincount(b["y"], minlength=6)
    assert sorted(counts[counts > 0].tolist()) == [4, 4, 4]
    assert set(b["y"].tolist()) <= {0, 2, 4, 5}
    np.testing.assert_array_equal(ds.y[b["x"][:, 0].astype(int)], b["y"])


def test_pair_batches():
  ds = _toy()
  b = next(episodes.pair_batches(ds, 10, seed=0))
  i1, i2 = b["x1"][:, 0].astype(int), b["x2"][:, 0].astype(int)
  np.testing.assert_array_equal(b["same"], (ds.y[i1] == ds.y[i2]))
  assert b["same"].sum() == 5
  assert np.all(i1 != i2)


def test_sinusoid_tasks():
  fam = episodes.SinusoidTasks(seed=0)
  amps, phases = [], []
  for i in range(200):
    t = fam.task(i, 5, 7)
    assert t["support_x"].shape == (5, 1) and t["query_y"].shape == (7, 1)
    x = np.concatenate([t["support_x"], t["query_x"]])
    y = np.concatenate([t["support_y"], t["query_y"]])
    np.testing.assert_allclose(y, t["amplitude"] * np.sin(x - t["phase"]),
                               atol=1e-5)
    assert np.all((x >= -5) & (x <= 5))
    amps.append(t["amplitude"])
    phases.append(t["phase"])
  assert 0.1 <= min(amps) and max(amps) <= 5.0 and max(amps) > 4.0
  assert 0.0 <= min(phases) and max(phases) <= np.pi and max(phases) > 2.5
  b = fam.batch(2, 4, 3, 6)
  assert b["support_x"].shape == (4, 3, 1) and b["amplitude"].shape == (4,)
  np.testing.assert_array_equal(b["query_x"][1], fam.task(9, 3, 6)["query_x"])


def test_mean_ci95():
  m, h = episodes.mean_ci95([1.0, 2.0, 3.0, 4.0])
  assert m == 2.5
  np.testing.assert_allclose(h, 1.96 * np.sqrt(5 / 3) / 2)
  with pytest.raises(ValueError, match="NaN"):
    episodes.mean_ci95([1.0, float("nan")])


def test_rotated_classes_are_new_classes_of_turned_images():
  ds = data.load("digits")
  x0 = ds.x[ds.y == 3]
  aug, classes = episodes.rotated_classes(ds, [3, 7], 4)
  assert classes == [3, 7, 13, 17, 23, 27, 33, 37] and aug.num_classes == 40
  assert sorted(set(aug.y.tolist())) == sorted(classes)
  h = x0.shape[1]
  for k in range(4):
    got = aug.x[aug.y == 3 + 10 * k]
    want = x0
    for _ in range(k):  # a quarter turn anticlockwise, by index
      want = np.stack([[[want[n, j, h - 1 - i] for j in range(h)]
                        for i in range(h)] for n in range(len(want))])
    np.testing.assert_array_equal(got, want)
  half, cls2 = episodes.rotated_classes(ds, [3], 2)
  assert cls2 == [3, 13]
  np.testing.assert_array_equal(half.x[half.y == 13], x0[:, ::-1, ::-1])
  same, cls1 = episodes.rotated_classes(ds, [3], 1)
  assert cls1 == [3]
  np.testing.assert_array_equal(same.x, x0)
  with pytest.raises(ValueError, match="rotations must be 1"):
    episodes.rotated_classes(ds, [3], 3)
  with pytest.raises(ValueError, match="square images"):
    episodes.rotated_classes(data.load("mnist1d:standard"), [3], 4)
