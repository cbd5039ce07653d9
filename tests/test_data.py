"""Every data source, its options and its bad inputs; batching."""

import os
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tljax import data
from tljax.data import sources


@pytest.mark.parametrize("spec,shape,classes", [
    ("mnist1d", (40,), 10), ("mnist1d:noisy", (40,), 10),
    ("mnist1d:sheared", (40,), 10), ("digits", (8, 8, 1), 10),
    ("digits:rotated", (8, 8, 1), 10), ("digits:inverted", (8, 8, 1), 10),
    ("moons:30", (2,), 2),
])
def test_embedded_sources(spec, shape, classes):
  tr, te = data.load(spec), data.load(spec, "test")
  assert tr.example_shape == shape and te.example_shape == shape
  assert tr.num_classes == classes
  assert tr.x.dtype == np.float32 and tr.y.dtype == np.int32
  assert set(np.unique(tr.y)) == set(range(classes))
  assert np.isfinite(tr.x).all()
  # Deterministic: the same spec is the same data.
  np.testing.assert_array_equal(data.load(spec).x, tr.x)


def test_coil_is_both_shared_files_as_images(monkeypatch):
  d = sources.shared_data_dir()
  paths = [os.path.join(d, f"coil{i}.npz") for i in (1, 2)]
  if not all(os.path.exists(p) for p in paths):
    pytest.skip(f"COIL-20 data not found at {os.path.abspath(d)} (coil1.npz, "
                "coil2.npz; see ../shared/data/README.md): skipping the coil "
                "source test")
  files = [np.load(p) for p in paths]
  ds = data.load("coil")
  assert ds.example_shape == (32, 32, 1) and ds.modality == "image"
  assert ds.num_classes == 20 and np.bincount(ds.y).tolist() == [72] * 20
  np.testing.assert_array_equal(
      ds.x.reshape(1440, -1), np.concatenate([f["x"] for f in files]))
  np.testing.assert_array_equal(ds.y, np.concatenate([f["y"] for f in files]))
  # Both splits are all images: the protocols use disjoint class sets.
  np.testing.assert_array_equal(data.load("coil", "test").x, ds.x)
  two = data.load("coil:2", classes=range(10, 20), relabel=False)
  keep = files[1]["y"] >= 10
  np.testing.assert_array_equal(two.x.reshape(len(two), -1),
                                files[1]["x"][keep])
  monkeypatch.setenv("TLJAX_SHARED_DATA", "/nonexistent")
  with pytest.raises(FileNotFoundError, match="COIL-20 not found"):
    data.load("coil")
  with pytest.raises(ValueError, match="unknown coil preset"):
    data.load("coil:3")


def test_domains_differ_as_described():
  clean, inv = data.load("digits"), data.load("digits:inverted")
  np.testing.assert_allclose(inv.x, 1.0 - clean.x, atol=1e-6)
  m0, m30 = data.load("moons:0").x, data.load("moons:30").x
  # Rotation by 30 degrees turns the principal axis by 30 degrees.
  def axis_angle(x):
    w, v = np.linalg.eigh(np.cov(x.T))
    a = np.degrees(np.arctan2(v[1, -1], v[0, -1])) % 180
    return a
  d = (axis_angle(m30) - axis_angle(m0)) % 180
  assert abs(d - 30) < 5, d
  # The noisy mnist1d domain is rougher than the clean one.
  rough = lambda x: np.abs(np.diff(x, axis=1)).mean()  # noqa: E731
  assert rough(data.load("mnist1d:noisy").x) > 1.3 * rough(
      data.load("mnist1d:clean").x)


def test_mnist1d_generation_keeps_global_random_state(tmp_path, monkeypatch):
  monkeypatch.setenv("TLJAX_CACHE", str(tmp_path))  # force generation
  np.random.seed(123)
  expected = np.random.rand()
  np.random.seed(123)
  fresh = data.load("mnist1d:standard")
  assert np.random.rand() == expected
  assert any(p.name.startswith("mnist1d_standard") for p in tmp_path.iterdir())
  np.testing.assert_array_equal(data.load("mnist1d:standard").x, fresh.x)


def test_label_budget_classes_and_subsets():
  d = data.load("digits", labels_per_class=3, seed=1)
  assert len(d) == 30
  assert np.bincount(d.y).tolist() == [3] * 10
  assert not np.array_equal(data.load("digits", labels_per_class=3,
                                      seed=2).x, d.x)
  sub = data.load("digits", classes=[3, 7])
  assert sub.num_classes == 2 and set(sub.y) == {0, 1}
  keep = data.load("digits", classes=[3, 7], relabel=False)
  assert keep.num_classes == 10 and set(keep.y) == {3, 7}
  assert len(data.load("mnist1d", num_examples=17)) == 17
  # The same subset named in the spec (what a config string can say), on
  # both splits; an explicit list of classes is the reference.
  full = data.load("digits", "test")
  for spec, classes in (("digits?classes=3-5", [3, 4, 5]),
                        ("digits?classes=7,1-2", [7, 1, 2])):
    ref = data.load("digits", "test", classes=classes)
    got = data.load(spec, "test")
    assert got.name == spec and got.num_classes == len(classes)
    np.testing.assert_array_equal(got.x, ref.x)
    np.testing.assert_array_equal(got.y, ref.y)
    assert np.isin(full.y, classes).sum() == len(got)
  for bad, match in (("digits?classes=5-3", "indices and ranges"),
                     ("digits?classes=", "indices and ranges"),
                     ("digits?classes=1,1", "once"),
                     ("digits?classes=10", r"\[10\] are not in")):
    with pytest.raises(ValueError, match=match):
      data.load(bad)
  with pytest.raises(ValueError, match="given twice"):
    data.load("digits?classes=1-2", classes=[1])


def test_npz_with_and_without_test_arrays(tmp_path):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(50, 6)), rng.integers(0, 3, 50)
  p = tmp_path / "a.npz"
  np.savez(p, x=x, y=y)
  tr, te = data.load(f"npz:{p}"), data.load(f"npz:{p}", "test")
  assert len(tr) == 40 and len(te) == 10 and tr.num_classes == 3
  # The held-out 20% is disjoint from the training part.
  rows = {r.tobytes() for r in tr.x}
  assert not any(r.tobytes() in rows for r in te.x)
  q = tmp_path / "b.npz"
  np.savez(q, x=x, y=y, x_test=x[:5], y_test=y[:5], num_classes=4)
  assert len(data.load(f"npz:{q}")) == 50
  assert data.load(f"npz:{q}", "test").num_classes == 4
  u = tmp_path / "unlabelled.npz"
  np.savez(u, x=x)
  assert data.load(f"npz:{u}").y is None
  with pytest.raises(ValueError, match="has no labels"):
    data.load(f"npz:{u}").require_labels()


@pytest.mark.parametrize("arrays,match", [
    (dict(y=np.zeros(3)), r"needs 'x'"),
    (dict(x=np.zeros(4)), r"shape \(n, \.\.\.\)"),
    (dict(x=np.zeros((4, 2)), y=np.zeros(3)), r"y must have shape \(4,\)"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, 1, 5, 1]), num_classes=3),
     r"labels must lie in \[0, 3\)"),
    (dict(x=np.zeros((4, 2)), y=np.array([0, -1, 1, 1])),
     r"labels must lie in"),
    (dict(x=np.zeros((4, 2)), y=np.array([0.5, 1, 1, 0])), "integer class"),
    (dict(x=np.full((4, 2), np.nan), y=np.array([0, 1, 1, 0])), "NaN"),
    (dict(x=np.zeros((0, 4))), r"is empty: 'x' has shape \(0, 4\)"),
    (dict(x=np.zeros((1, 4)), y=np.zeros(1, int)),
     "too few to hold out a test split; add x_test"),
    (dict(x=np.array([np.zeros(3), np.zeros(2)], dtype=object)),
     "dtype object.*save numeric arrays"),
])
def test_npz_bad_inputs(tmp_path, arrays, match):
  p = tmp_path / "bad.npz"
  np.savez(p, **arrays)
  with pytest.raises(ValueError, match=match):
    data.load(f"npz:{p}")


def test_bad_specs(tmp_path):
  with pytest.raises(FileNotFoundError, match="no file at"):
    data.load(f"npz:{tmp_path}/missing.npz")
  with pytest.raises(ValueError, match="unknown mnist1d preset 'blurry'"):
    data.load("mnist1d:blurry")
  with pytest.raises(ValueError, match="unknown digits preset"):
    data.load("digits:upside")
  for angle in ("left", "inf", "nan", "-inf"):
    with pytest.raises(ValueError, match="needs an angle in degrees"):
      data.load(f"moons:{angle}")
  with pytest.raises(ValueError, match="num_examples must be >= 1"):
    data.load("moons", num_examples=-1)
  with pytest.raises(ValueError, match="not a readable .npz"):
    bad = tmp_path / "text.npz"
    bad.write_text("not an archive")
    data.load(f"npz:{bad}")
  with pytest.raises(ValueError, match="unknown data source 'imagenet'"):
    data.load("imagenet")
  with pytest.raises(ValueError, match="split must be"):
    data.load("digits", "validation")
  with pytest.raises(ValueError, match=r"classes \[12\] are not in"):
    data.load("digits", classes=[12])


def test_tfds_unknown_name_is_one_short_error():
  with pytest.raises(ValueError) as e:
    data.load("tfds:no_such_data_set_anywhere")
  msg = str(e.value)
  assert "does not know 'no_such_data_set_anywhere'" in msg
  assert "\n" not in msg and len(msg) < 500  # not the list of every data set


def test_tfds_unprepared_is_one_clear_error(tmp_path):
  with pytest.raises(RuntimeError, match="not prepared.*never downloads"):
    data.load("tfds:mnist", data_dir=str(tmp_path))


def test_tfds_mocked():
  # mock_data replaces the records; we also tell the builder it is prepared
  # (what a real prepared data_dir says).
  with tfds.testing.mock_data(num_examples=12,
                              policy=tfds.testing.MockPolicy.USE_CODE), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared",
                        return_value=True):
    d = data.load("tfds:mnist")
    t = data.load("tfds:mnist", "test")
    b = data.load("tfds:mnist", labels_per_class=1)
  assert d.x.shape == (12, 28, 28, 1) and t.x.shape == (12, 28, 28, 1)
  assert d.num_classes == 10 and 0.0 <= d.x.min() and d.x.max() <= 1.0
  assert len(b) == len(np.unique(d.y))


def test_batches_are_seeded_epoch_permutations():
  arrays = {"x": np.arange(10), "y": np.arange(10) * 2}
  it = data.batches(arrays, 4, seed=0)
  first = [next(it) for _ in range(5)]  # 20 examples = two epochs
  seen = np.concatenate([b["x"] for b in first])
  assert sorted(seen[:10]) == list(range(10))
  assert sorted(seen[10:]) == list(range(10))
  assert all((b["y"] == 2 * b["x"]).all() for b in first)
  resumed = next(data.batches(arrays, 4, seed=0, start_step=3))
  np.testing.assert_array_equal(resumed["x"], first[3]["x"])
  other = next(data.batches(arrays, 4, seed=1))
  assert not np.array_equal(other["x"], first[0]["x"])


def test_batches_split_across_processes():
  arrays = {"x": np.arange(12)}
  whole = next(data.batches(arrays, 6, seed=0, process_index=0,
                            process_count=1))["x"]
  parts = [next(data.batches(arrays, 6, seed=0, process_index=i,
                             process_count=2))["x"] for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  with pytest.raises(ValueError, match="not divisible"):
    next(data.batches(arrays, 5, process_index=0, process_count=2))


def test_eval_batches_cover_everything_once():
  arrays = {"x": np.arange(10)}
  got = [b["x"][:n] for b, n in data.eval_batches(arrays, 4)]
  assert [len(b["x"]) for b, _ in data.eval_batches(arrays, 4)] == [4, 4, 4]
  np.testing.assert_array_equal(np.concatenate(got), np.arange(10))


def test_batch_index_functions_refuse_bad_arguments_alike():
  from tljax.data import batching  # pylint: disable=g-import-not-at-top
  fns = [lambda n, b, pc: batching.local_batch_indices(
             n, b, 0, 0, process_index=0, process_count=pc),
         lambda n, b, pc: batching.stacked_batch_indices(
             n, b, 3, seed=0, process_index=0, process_count=pc)]
  for fn in fns:
    with pytest.raises(ValueError, match="empty data set"):
      fn(0, 4, 1)
    with pytest.raises(ValueError, match="positive integer"):
      fn(10, 2.5, 1)
    with pytest.raises(ValueError, match="positive integer"):
      fn(10, 0, 1)
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
      fn(10, 4, 3)
  # The stacked indices are the per-step ones, by an independent loop.
  got = batching.stacked_batch_indices(7, 4, 5, seed=3, start_step=2,
                                       process_index=1, process_count=2)
  want = [batching.batch_indices(7, 4, 2 + s, 3)[2:4] for s in range(5)]
  np.testing.assert_array_equal(got, np.stack(want))
