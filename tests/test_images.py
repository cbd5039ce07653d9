"""Image folders and lazy tfds images: layout, transforms against numpy/PIL
references, augmentation as a pure function of (seed, step), clear errors,
and the train / adapt / transfer-report binaries on folders."""

import json
import os
import sys
from unittest import mock

import numpy as np
from PIL import Image
import pytest

from tljax import data
from tljax import models
from tljax.data import batching
from tljax.data import images
from tljax.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import adapt as adapt_config  # noqa: E402
from configs import train as train_config  # noqa: E402
from configs import transfer_report as report_config  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
CLASSES = ("cat", "dog", "fish")
H, W = 20, 24
CONSTANT = (200, 100, 50)  # dog/0.png of every domain is this one colour


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  """Two domains, 3 classes x 4 images of 20x24 (PNG, one .JPG)."""
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for dom in ("a", "b"):
    for c in CLASSES:
      os.makedirs(root / dom / c)
      for i in range(4):
        x = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        if dom == "b":
          x = (x // 2 + 100).astype(np.uint8)  # a shifted domain
        if c == "dog" and i == 0:
          x[:] = CONSTANT
        ext = ".JPG" if (c, i) == ("fish", 3) else ".png"
        Image.fromarray(x).save(root / dom / c / f"{i}{ext}",
                                format="JPEG" if ext == ".JPG" else "PNG")
    (root / dom / "notes.txt").write_text("not a class")
  return root


def _reference_eval(path, size, resize, fit):
  """torchvision's Resize + CenterCrop and ImageNet normalisation, written
  out with PIL's bilinear resize and numpy slicing."""
  img = Image.open(path).convert("RGB")
  w, h = img.size
  if fit == "square":
    nw = nh = resize
  elif w <= h:
    nw, nh = resize, int(resize * h / w)
  else:
    nw, nh = int(resize * w / h), resize
  x = np.asarray(img.resize((nw, nh), Image.BILINEAR), np.float64)
  top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
  x = x[top:top + size, left:left + size]
  return (x / 255.0 - MEAN) / STD


# ------------------------------------------------------------- layout
def test_folder_classes_labels_and_splits(tree):
  train = data.load(f"folder:{tree}/a?size=8")
  test = data.load(f"folder:{tree}/a?size=8", "test")
  assert train.class_names == CLASSES and train.num_classes == 3
  assert train.modality == "image" and train.example_shape == (8, 8, 3)
  # A fixed 20% of each class (1 of 4) is held out; train and test are
  # disjoint and together every image.
  assert np.bincount(train.y).tolist() == [3, 3, 3]
  assert np.bincount(test.y).tolist() == [1, 1, 1]
  names = lambda d: {d.x.names[i] for i in d.x.indices}  # noqa: E731
  assert not names(train) & names(test)
  assert len(names(train) | names(test)) == 12
  for d in (train, test):
    for i, y in zip(d.x.indices, d.y):
      assert os.path.basename(os.path.dirname(d.x.names[i])) == CLASSES[y]
  every = data.load(f"folder:{tree}/a?test=all", "test")
  assert len(every) == 12 and every.example_shape == (224, 224, 3)
  # Label budgets and class subsets select without decoding.
  one = data.load(f"folder:{tree}/a?test=all", labels_per_class=1)
  assert sorted(one.y.tolist()) == [0, 1, 2]
  sub = data.load(f"folder:{tree}/a?test=all", classes=[2, 1])
  assert sub.class_names == ("fish", "dog") and set(sub.y) == {0, 1}


def test_train_and_test_subtrees(tmp_path):
  for split, n in (("train", 3), ("val", 2)):
    for c in ("x", "y"):
      os.makedirs(tmp_path / split / c)
      for i in range(n):
        Image.new("RGB", (9, 7), (i, 0, 0)).save(tmp_path / split / c /
                                                 f"{i}.png")
  train = data.load(f"folder:{tmp_path}")
  test = data.load(f"folder:{tmp_path}", "test")
  assert len(train) == 6 and len(test) == 4
  assert all("/val/" in test.x.names[i] for i in test.x.indices)
  with pytest.raises(ValueError, match="test=all does not apply"):
    data.load(f"folder:{tmp_path}?test=all")


# ---------------------------------------------------------- transforms
@pytest.mark.parametrize("fit,size,resize", [("short", 16, 18),
                                             ("square", 12, 14),
                                             ("short", 20, 0)])
def test_eval_transform_matches_reference(tree, fit, size, resize):
  opts = f"size={size}&fit={fit}" + (f"&resize={resize}" if resize else "")
  d = data.load(f"folder:{tree}/a?test=all&{opts}", "test")
  x = np.asarray(d.x)
  assert x.shape == (12, size, size, 3) and x.dtype == np.float32
  r = resize or int(round(size * 256 / 224))
  for i in range(12):
    ref = _reference_eval(d.x.names[d.x.indices[i]], size, r, fit)
    np.testing.assert_allclose(x[i], ref, atol=1e-5)
  # Indexing is the same transform, one example or a few.
  np.testing.assert_array_equal(d.x[3], x[3])
  np.testing.assert_array_equal(d.x[[5, 0, 5]], x[[5, 0, 5]])


def test_normalization_of_a_constant_image(tree):
  d = data.load(f"folder:{tree}/a?test=all&size=8", "test")
  i = next(k for k, j in enumerate(d.x.indices)
           if d.x.names[j].endswith(os.path.join("dog", "0.png")))
  expected = (np.array(CONSTANT) / 255.0 - MEAN) / STD  # by hand
  np.testing.assert_allclose(d.x[i], np.broadcast_to(expected, (8, 8, 3)),
                             atol=1e-5)
  # Any crop, resize or flip of one colour is that colour.
  x = d.x.augmented(i, np.random.default_rng(3))
  np.testing.assert_allclose(x, np.broadcast_to(expected, (8, 8, 3)),
                             atol=1e-5)


def test_random_resized_crop_boxes():
  t = images.Transform(size=8, min_scale=0.3)
  rng = np.random.default_rng(0)
  for _ in range(300):
    left, top, w, h = t.crop_box(40, 30, rng)
    assert 0 <= left and left + w <= 40 and 0 <= top and top + h <= 30
    # Rounding to whole pixels moves the ratio and area a little.
    assert 3 / 4 - 0.08 <= w / h <= 4 / 3 + 0.08
    assert 0.3 * 1200 * 0.85 <= w * h <= 1200
  # No crop of the whole area fits at another ratio: the whole image.
  t1 = images.Transform(size=8, min_scale=1.0)
  assert {t1.crop_box(30, 30, rng) for _ in range(20)} == {(0, 0, 30, 30)}


def test_augmented_batches_are_a_pure_function_of_seed_and_step(tree):
  d = data.load(f"folder:{tree}/a?test=all&size=10")
  arrays = d.arrays()
  it = data.batches(arrays, 5, seed=4)
  first = [next(it) for _ in range(4)]  # 20 draws: past one epoch of 12
  for step, b in enumerate(first):
    assert b["x"].shape == (5, 10, 10, 3) and b["x"].dtype == np.float32
    idx = batching.batch_indices(12, 5, step, 4)  # the in-memory order
    np.testing.assert_array_equal(b["y"], d.y[idx])
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    assert (b["x"] >= lo - 1e-5).all() and (b["x"] <= hi + 1e-5).all()
  # Resuming at step 2 gives the same images; another seed others.
  resumed = next(data.batches(arrays, 5, seed=4, start_step=2))
  np.testing.assert_array_equal(resumed["x"], first[2]["x"])
  other = next(data.batches(arrays, 5, seed=5))
  assert not np.array_equal(other["x"], first[0]["x"])
  # Augmented, not the evaluation transform.
  assert not np.allclose(first[0]["x"], d.x[batching.batch_indices(12, 5, 0,
                                                                   4)])
  # Two processes: each its half of the same global batch.
  halves = [next(data.batches(arrays, 6, seed=4, start_step=1,
                              process_index=p, process_count=2))
            for p in (0, 1)]
  whole = next(data.batches(arrays, 6, seed=4, start_step=1,
                            process_index=0, process_count=1))
  np.testing.assert_array_equal(
      np.concatenate([h["x"] for h in halves]), whole["x"])


def test_tfds_images_lazily():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=6,
                              policy=tfds.testing.MockPolicy.USE_CODE), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared",
                        return_value=True):
    eager = data.load("tfds:mnist")
    lazy = data.load("tfds:mnist?size=28&resize=28")
    x = np.asarray(lazy.x)
    b = next(data.batches(lazy.arrays(), 4, seed=0))
  assert isinstance(lazy.x, data.ImageArray) and lazy.num_classes == 10
  np.testing.assert_array_equal(lazy.y, eager.y)
  # Grey 28x28 digits at 28: no resize, grey to RGB, then normalised.
  ref = (np.repeat(eager.x, 3, axis=-1) - MEAN) / STD
  np.testing.assert_allclose(x, ref, atol=1e-5)
  assert b["x"].shape == (4, 28, 28, 3)


# -------------------------------------------------------------- errors
def test_clear_errors(tmp_path, tree):
  with pytest.raises(FileNotFoundError, match="no directory"):
    data.load(f"folder:{tmp_path}/missing")
  (tmp_path / "flat").mkdir()
  Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
  with pytest.raises(ValueError, match="no class folders"):
    data.load(f"folder:{tmp_path}/flat")
  os.makedirs(tmp_path / "gap" / "full")
  os.makedirs(tmp_path / "gap" / "empty")
  Image.new("RGB", (4, 4)).save(tmp_path / "gap" / "full" / "a.png")
  (tmp_path / "gap" / "empty" / "readme.txt").write_text("x")
  with pytest.raises(ValueError, match="empty holds no images"):
    data.load(f"folder:{tmp_path}/gap")
  with pytest.raises(ValueError, match="unknown image option 'sz=3'"):
    data.load(f"folder:{tree}/a?sz=3")
  with pytest.raises(ValueError, match="size must be a positive integer"):
    data.load(f"folder:{tree}/a?size=big")
  with pytest.raises(ValueError, match="smaller than size"):
    data.load(f"folder:{tree}/a?size=32&resize=16")
  # An unreadable image: the error names the file, when it is decoded.
  os.makedirs(tmp_path / "bad" / "c")
  Image.new("RGB", (4, 4)).save(tmp_path / "bad" / "c" / "good.png")
  (tmp_path / "bad" / "c" / "broken.jpg").write_bytes(b"not a jpeg")
  d = data.load(f"folder:{tmp_path}/bad?test=all&size=4")
  broken = os.path.join(str(tmp_path), "bad", "c", "broken.jpg")
  with pytest.raises(ValueError, match=f"cannot read image {broken}"):
    np.asarray(d.x)
  with pytest.raises(ValueError, match="broken.jpg"):
    next(data.batches(d.arrays(), 2, seed=0))


# ---------------------------------------------------------- end to end
def _tiny_cnn(config):
  config.model.name = "cnn2d"
  config.model.cnn2d.update(channels=(4,), dense=8)


def _loop(config, steps=2, batch_size=4):
  config.update(num_steps=steps, batch_size=batch_size, log_every=steps)
  for k in ("eval_every", "checkpoint_every"):
    if k in config:
      config[k] = 0


def test_train_on_folders(tree, tmp_path):
  from tljax.drivers import adapt  # pylint: disable=g-import-not-at-top
  from tljax.drivers import train  # pylint: disable=g-import-not-at-top
  c = train_config.get_config("quick")
  c.source, c.target = f"folder:{tree}/a?size=8", f"folder:{tree}/b?size=8"
  c.optim.warmup_steps = 0
  _tiny_cnn(c)
  _loop(c)
  m = train.train_and_evaluate(c, str(tmp_path / "train"))
  assert m["train_examples"] == 9 and 0 <= m["target_accuracy"] <= 1
  with open(tmp_path / "train" / "results.json") as f:
    assert json.load(f)["metrics"]["source_accuracy"] == m["source_accuracy"]

  # (adapt.py trains on folders in test_office31_preset_smoke.) Domains
  # whose class folders differ are refused before training.
  c = adapt_config.get_config("quick")
  c.source = f"folder:{tree}/a?size=8&test=all"
  os.makedirs(tmp_path / "other")
  for c_name in ("ant", "bee", "cow"):
    os.makedirs(tmp_path / "other" / c_name)
    Image.new("RGB", (6, 6)).save(tmp_path / "other" / c_name / "0.png")
  c.target = f"folder:{tmp_path}/other?size=8&test=all"
  with pytest.raises(ValueError, match="class folders of source and target"):
    adapt.train_and_evaluate(c, str(tmp_path / "mismatch"))


def _init_from(config, path, num_classes=5):
  """A tiny random-weight 'pretrained' model of ``config.model``, saved."""
  model = models.build_classifier(config.model, num_classes, (8, 8, 3),
                                  "image")
  params, state = models.init_variables(model, (8, 8, 3), 11)
  checkpoint.save_params(path, params, state)
  return path


def test_office31_preset_smoke(tree, tmp_path):
  from tljax.drivers import adapt  # pylint: disable=g-import-not-at-top
  full = adapt_config.get_config("office31")
  assert (full.model.name, full.bottleneck_dim, full.batch_size,
          full.num_steps) == ("resnet50", 256, 32, 20000)
  assert full.optim.name == "momentum" and full.optim.schedule == "annealed"
  c = adapt_config.get_config("office31,quick")
  # A ResNet-50 compiles for minutes on two cores: a tiny CNN stands in
  # for it here, with the preset's bottleneck, optimizer and init_from.
  _tiny_cnn(c)
  c.bottleneck_dim, c.disc_features = 8, (8,)
  c.source = f"folder:{tree}/a?size=8&test=all&fit=square"
  c.target = f"folder:{tree}/b?size=8&test=all&fit=square"
  c.plot = False
  _loop(c)
  c.init_from = _init_from(c, str(tmp_path / "pretrained"))
  m = adapt.train_and_evaluate(c, str(tmp_path / "office31"))
  assert {"target_accuracy", "domain_accuracy"} <= set(m)
  assert 0 <= m["target_accuracy"] <= 1


def test_transfer_report_folder_preset_smoke(tree, tmp_path):
  from tljax.drivers import transfer_report  # pylint: disable=g-import-not-at-top
  c = report_config.get_config("folder,quick")
  assert c.source == "" and c.model.name == "resnet50"
  _tiny_cnn(c)
  c.target = f"folder:{tree}/b?size=8"
  c.strategies = ("linear_probe", "finetune")
  c.init_from = _init_from(c, str(tmp_path / "pretrained"))
  m = transfer_report.train_and_evaluate(c, str(tmp_path / "report"))
  assert set(m["accuracy"]) == {"linear_probe", "finetune"}
  assert "source_only" not in m["accuracy"]
  with pytest.raises(ValueError, match="init_from"):
    c.init_from = ""
    transfer_report.train_and_evaluate(c, str(tmp_path / "nope"))
