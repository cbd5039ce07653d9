"""Data sources named by a string, the same in configs, flags and Python.

    load("mnist1d")                  # mnist1d, clean source domain
    load("mnist1d:noisy", "test")    # a shifted target domain
    load("digits:rotated")           # scikit-learn 8x8 digits, rotated 30 deg
    load("moons:30")                 # two moons rotated by 30 degrees
    load("coil")                     # COIL-20, 20 objects x 72 poses, 32x32
    load("npz:/path/to/target.npz")  # your arrays: x, y (y optional)
    load("tfds:mnist")               # a prepared TensorFlow Datasets set
    load("folder:/data/office31/amazon")  # <root>/<class>/*.jpg images
    load("tfds:imagenette?size=160")      # tfds images, decoded lazily
    load("mnist1d:clean?classes=0-4")     # five of the ten classes (0..4)

Every source returns a :class:`Dataset` of numpy arrays: ``x`` float32 with
the example axis first (images NHWC), ``y`` int32 labels or ``None``, and
its ``modality`` (``image``, ``signal`` or ``vector``: what the examples
are, which picks the default backbone). An npz file may say its own with a
``modality`` string array; otherwise it is read from the shape: (n, d)
feature vectors, (n, length, channels) signals, (n, h, w, c) images.
Embedded sources (mnist1d, digits, moons) need no network; they are
generated with fixed seeds, so a spec names the same data everywhere.
``coil`` reads the COIL-20 files of the project's shared data folder
(``coil1.npz``, ``coil2.npz`` in ``$TLJAX_SHARED_DATA``, default
``../shared/data`` beside the repository; see :func:`_coil`).

Image folders and tfds specs with image options after ``?`` are read
lazily: ``x`` is a :class:`tljax.data.images.ImageArray`, decoded as it is
indexed and augmented as training batches are drawn; see
:mod:`tljax.data.images` for the layout, the options (``size``,
``resize``, ``fit``, ``min_scale``, ``test``) and the transforms.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from typing import Sequence
import zipfile

import numpy as np

SPLITS = ("train", "test")
MODALITIES = ("image", "signal", "vector")


@dataclasses.dataclass
class Dataset:
  """Arrays of one split of one data source."""
  x: np.ndarray
  y: np.ndarray | None
  num_classes: int | None
  name: str
  modality: str | None = None  # image | signal | vector; None: unknown
  class_names: tuple[str, ...] | None = None  # image folders: class folders

  def __post_init__(self):
    if self.modality is None:
      self.modality = modality_from_shape(self.x.shape[1:])

  def __len__(self):
    return len(self.x)

  @property
  def example_shape(self) -> tuple[int, ...]:
    return tuple(self.x.shape[1:])

  def arrays(self) -> dict[str, np.ndarray]:
    return {"x": self.x} if self.y is None else {"x": self.x, "y": self.y}

  def require_labels(self, num_classes: int | None = None) -> "Dataset":
    """Raises unless labelled, with labels in ``[0, num_classes)``."""
    if self.y is None:
      raise ValueError(f"data set {self.name!r} has no labels (its npz has no "
                       "'y'); this use needs labelled data.")
    n = self.num_classes if num_classes is None else num_classes
    check_labels(self.y, n, self.name)
    return self


def modality_from_shape(example_shape: Sequence[int]) -> str:
  """What examples of this shape most likely are: ``vector`` (d,),
  ``signal`` (length, channels), ``image`` (h, w, c)."""
  return {1: "vector", 2: "signal", 3: "image"}.get(len(example_shape),
                                                    "vector")


def check_labels(y: np.ndarray, num_classes: int, name: str):
  bad = (y < 0) | (y >= num_classes)
  if bad.any():
    raise ValueError(
        f"data set {name!r}: labels must lie in [0, {num_classes}), but "
        f"{int(bad.sum())} do not (e.g. {sorted(set(y[bad].tolist()))[:5]}). "
        "Map your labels to 0..num_classes-1, or give the model more classes.")


# ----------------------------------------------------------------- mnist1d
# Domain presets are the mnist1d generator's own arguments (Greydanus, 2020):
# the clean source has little noise; the targets shift one property each.
# Measured with a CNN1D trained 1500 steps (clean-trained model on the target
# test split -> model trained on all target labels): noisy 0.36 -> 0.60,
# sheared 0.68 -> 0.88, translated 0.86 -> 0.93, standard 0.61 -> 0.80.
MNIST1D_PRESETS = {
    "clean": dict(corr_noise_scale=0.1, iid_noise_scale=0.01,
                  shear_scale=0.5, scale_coeff=0.4),
    "standard": {},  # the published MNIST-1D generator settings
    "noisy": dict(corr_noise_scale=0.25, iid_noise_scale=0.1,
                  shear_scale=0.5, scale_coeff=0.4),
    "sheared": dict(corr_noise_scale=0.1, iid_noise_scale=0.01,
                    shear_scale=1.75, scale_coeff=0.9),
    "translated": dict(corr_noise_scale=0.1, iid_noise_scale=0.01,
                       shear_scale=0.5, scale_coeff=0.4, max_translation=60,
                       padding=[24, 72]),
}


def _cache_dir() -> str:
  d = os.environ.get("TLJAX_CACHE",
                     os.path.join(os.path.expanduser("~"), ".cache", "tljax"))
  os.makedirs(d, exist_ok=True)
  return d


def _mnist1d(preset: str, num_samples: int = 5000) -> dict[str, np.ndarray]:
  if preset not in MNIST1D_PRESETS:
    raise ValueError(f"unknown mnist1d preset {preset!r}; choose one of "
                     f"{sorted(MNIST1D_PRESETS)}")
  path = os.path.join(_cache_dir(), f"mnist1d_{preset}_{num_samples}_v2.npz")
  if os.path.exists(path):
    with np.load(path) as f:
      return dict(f)
  from mnist1d import data as m1d  # pylint: disable=g-import-not-at-top
  args = m1d.get_dataset_args()
  args.num_samples = num_samples
  # Each domain draws its own examples, so source and target never share one.
  args.seed = 42 + sorted(MNIST1D_PRESETS).index(preset)
  for k, v in MNIST1D_PRESETS[preset].items():
    setattr(args, k, v)
  # mnist1d seeds numpy's and python's global generators; keep ours intact.
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    d = m1d.make_dataset(args)
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  out = {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int32),
         "x_test": d["x_test"].astype(np.float32),
         "y_test": d["y_test"].astype(np.int32)}
  tmp = path + f".{os.getpid()}.tmp.npz"
  np.savez(tmp, **out)
  os.replace(tmp, path)
  return out


# ------------------------------------------------------------------ digits
def _digits(preset: str) -> dict[str, np.ndarray]:
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  d = datasets.load_digits()
  x = (d.images / 16.0).astype(np.float32)
  y = d.target.astype(np.int32)
  m = re.fullmatch(r"rotated(-?\d+(?:\.\d+)?)?", preset)
  if preset == "clean":
    pass
  elif m:
    angle = float(m.group(1) or 30.0)
    x = np.stack([ndimage.rotate(im, angle, reshape=False, order=1)
                  for im in x]).clip(0, 1)
  elif preset == "inverted":
    x = 1.0 - x
  elif preset == "noisy":
    x = (x + np.random.default_rng(7).normal(0, 0.3, x.shape)).astype(
        np.float32)
  else:
    raise ValueError(f"unknown digits preset {preset!r}; choose clean, "
                     "rotated, rotated<degrees> (e.g. rotated45), inverted "
                     "or noisy")
  x = x[..., None].astype(np.float32)
  xtr, xte, ytr, yte = model_selection.train_test_split(
      x, y, test_size=0.3, random_state=0, stratify=y)
  return {"x": xtr, "y": ytr, "x_test": xte, "y_test": yte}


# Held-out-class protocols (metric learning, few-shot episodes): train on
# some classes, test on the others; the settings a config takes (data,
# train_classes, test_classes). coil: all 1440 COIL-20 images (20 objects x
# 72 poses, 32x32, ../shared/data), objects 0-9 / 10-19; digits:
# scikit-learn's 8x8 digits; mnist1d: the configs' own defaults.
HELD_OUT_PROTOCOLS = {
    "mnist1d": {},
    "coil": dict(data="coil", train_classes=tuple(range(10)),
                 test_classes=tuple(range(10, 20))),
    "digits": dict(data="digits"),
}


# -------------------------------------------------------------------- coil
def shared_data_dir() -> str:
  """``$TLJAX_SHARED_DATA``, or ``../shared/data`` beside the repository
  that holds this package (the project's real-data folder)."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  return os.environ.get("TLJAX_SHARED_DATA",
                        os.path.join(os.path.dirname(root), "shared", "data"))


def _coil(preset: str) -> dict[str, np.ndarray]:
  """COIL-20 as 32x32x1 grey images in [0, 1], labels 0..19.

  ``all`` (default): the 1440 images of both files, 20 objects x 72 poses,
  in both splits -- for protocols on disjoint class sets (metric learning
  and few-shot episodes train on some objects and test on the others), not
  for classification, where train and test would be the same images.
  ``1`` / ``2``: one JDA domain (Long et al. 2013: poses 0-85 and 180-265
  degrees, or the others), also in both splits (the transductive protocol).
  """
  files = {"all": (1, 2), "1": (1,), "2": (2,)}
  if preset not in files:
    raise ValueError(f"unknown coil preset {preset!r}; choose all, 1 or 2")
  d = shared_data_dir()
  paths = [os.path.join(d, f"coil{i}.npz") for i in files[preset]]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(
        f"COIL-20 not found: no {', '.join(missing)} (set TLJAX_SHARED_DATA "
        "to the folder holding coil1.npz and coil2.npz).")
  xs, ys = [], []
  for p in paths:
    with np.load(p, allow_pickle=False) as f:
      xs.append(np.asarray(f["x"], np.float32))
      ys.append(np.asarray(f["y"], np.int32))
  x = np.concatenate(xs).reshape(-1, 32, 32, 1)
  y = np.concatenate(ys)
  return {"x": x, "y": y, "x_test": x, "y_test": y}


# ------------------------------------------------------------------- moons
def _moons(arg: str) -> dict[str, np.ndarray]:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  try:
    angle = float(arg) if arg else 0.0
  except ValueError:
    angle = float("nan")
  if not np.isfinite(angle):
    raise ValueError(f"moons:<angle> needs an angle in degrees, a finite "
                     f"number, got "
                     f"{arg!r} (e.g. moons:30)")
  out = {}
  for split, n, seed in (("", 1000, 0), ("_test", 500, 1)):
    # Different draws per angle, so a rotated target is not the source's
    # points turned.
    rs = (seed * 1000003 + int(round(angle * 10))) % (2**31)
    x, y = datasets.make_moons(n, noise=0.1, random_state=rs)
    x = x - np.array([0.5, 0.25])
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    out["x" + split] = (x @ rot.T).astype(np.float32)
    out["y" + split] = y.astype(np.int32)
  return out


# --------------------------------------------------------------------- npz
def _npz(path: str, split: str, name: str) -> tuple:
  if not path:
    raise ValueError("npz:<path> needs a file path, e.g. npz:data/target.npz")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"data set {name!r}: no file at {path!r}. Save your arrays with "
        "np.savez(path, x=..., y=...) (y optional; x_test/y_test optional).")
  if not zipfile.is_zipfile(path):
    raise ValueError(f"data set {name!r}: {path} is not a readable .npz file "
                     "(not a zip archive of arrays); save it with np.savez.")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = dict(f)
  except ValueError as e:
    if "allow_pickle" in str(e):
      raise ValueError(f"data set {name!r}: {path} holds an array of Python "
                       "objects (dtype object), which tljax does not unpickle;"
                       " save numeric arrays, e.g. np.savez(path, "
                       "x=np.asarray(x, np.float32), y=np.asarray(y, "
                       "np.int64)).") from None
    raise ValueError(f"data set {name!r}: {path} is not a readable .npz file "
                     f"({e}); save it with np.savez.") from None
  except (OSError, EOFError) as e:
    raise ValueError(f"data set {name!r}: {path} is not a readable .npz file "
                     f"({e}); save it with np.savez.") from None
  if "x" not in arrays:
    raise ValueError(f"data set {name!r}: {path} has keys {sorted(arrays)} "
                     "but needs 'x' (examples first), and optionally 'y', "
                     "'x_test', 'y_test', 'num_classes'.")
  if "y_test" in arrays and "x_test" not in arrays:
    raise ValueError(f"data set {name!r}: {path} has y_test but no x_test; "
                     "give both, or neither (then 20% of x is held out).")
  for k in ("x", "x_test"):
    if k not in arrays:
      continue
    a = arrays[k]
    if a.ndim < 2 or not (np.issubdtype(a.dtype, np.number)
                          or a.dtype == np.bool_):
      raise ValueError(f"data set {name!r}: {k} must be a numeric array with "
                       f"the example axis first, shape (n, ...); got "
                       f"{a.dtype} {a.shape}.")
    if len(a) == 0:
      raise ValueError(f"data set {name!r}: {path} is empty: {k!r} has "
                       f"shape {a.shape}; a domain needs at least one "
                       "example.")
  for xk, yk in (("x", "y"), ("x_test", "y_test")):
    if yk in arrays and (arrays[yk].ndim != 1
                         or len(arrays[yk]) != len(arrays[xk])):
      raise ValueError(f"data set {name!r}: {yk} must have shape "
                       f"({len(arrays[xk])},) to match {xk} "
                       f"{arrays[xk].shape}; got {arrays[yk].shape}.")
  num_classes = None
  if "num_classes" in arrays:
    nc = arrays["num_classes"]
    if (nc.ndim != 0 or not np.issubdtype(nc.dtype, np.number)
        or nc != np.round(nc) or nc < 1):
      raise ValueError(f"data set {name!r}: num_classes must be one positive "
                       f"integer; got {nc.dtype} {nc.shape} {nc.tolist()!r}.")
    num_classes = int(nc)
  modality = None
  if "modality" in arrays:
    m = arrays["modality"]
    modality = str(m) if m.ndim == 0 and m.dtype.kind == "U" else None
    if modality not in MODALITIES:
      raise ValueError(f"data set {name!r}: modality must be one string of "
                       f"{list(MODALITIES)}, e.g. np.savez(path, x=x, "
                       f"modality='signal'); got {m.dtype} {m.tolist()!r}.")
  if "x_test" not in arrays and len(arrays["x"]) < 2:
    raise ValueError(f"data set {name!r}: {path} has {len(arrays['x'])} "
                     "example, too few to hold out a test split; add "
                     "x_test (and y_test) to the file, or more examples.")
  if "x_test" in arrays:
    key = "" if split == "train" else "_test"
    x, y = arrays["x" + key], arrays.get("y" + key)
  else:
    # No test arrays: hold out a fixed 20% (the same on every run).
    n = len(arrays["x"])
    perm = np.random.default_rng(0).permutation(n)
    cut = n - max(1, n // 5)
    idx = perm[:cut] if split == "train" else perm[cut:]
    x = arrays["x"][idx]
    y = arrays["y"][idx] if "y" in arrays else None
  x = np.asarray(x)
  if y is not None:
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
      if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
      else:
        raise ValueError(f"data set {name!r}: y must hold integer class "
                         f"labels; got dtype {y.dtype}.")
    if num_classes is None:
      all_y = [np.asarray(arrays[k]) for k in ("y", "y_test") if k in arrays]
      num_classes = max(int(a.max()) + 1 for a in all_y)
    check_labels(y, num_classes, name)
    y = y.astype(np.int32)
  return x.astype(np.float32), y, num_classes, modality


# -------------------------------------------------------------------- tfds
def _tfds(arg: str, split: str, name: str, data_dir: str | None,
          image_key: str = "image", label_key: str = "label") -> tuple:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  arg, lazy, options = arg.partition("?")
  parts = arg.split(":")
  ds_name = parts[0]
  if not ds_name:
    raise ValueError("tfds:<name>[:<train split>[:<test split>]] needs a "
                     "data set name, e.g. tfds:mnist")
  split_names = {"train": parts[1] if len(parts) > 1 else "train",
                 "test": parts[2] if len(parts) > 2 else "test"}
  try:
    builder = tfds.builder(ds_name, data_dir=data_dir)
  except Exception as e:  # tfds raises its own DatasetNotFoundError types.
    # tfds lists every data set it knows in the message; keep its first line.
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise ValueError(f"data set {name!r}: TensorFlow Datasets does not know "
                     f"{ds_name!r} ({first[:200]}); check the name with "
                     "tfds.list_builders().") from None
  if not builder.is_prepared():
    raise RuntimeError(
        f"data set {name!r} is not prepared in {builder.data_dir!r}, and "
        "tljax never downloads during a run. Prepare it once on a machine "
        "with network (python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{ds_name}', data_dir=DIR, file_format="
        "'array_record').download_and_prepare()\"), copy DIR here and pass "
        "--config.data_dir=DIR (or set TFDS_DATA_DIR).")
  source = tfds.data_source(ds_name, split=split_names[split],
                            data_dir=data_dir, download=False)
  n = len(source)
  first = source[0]
  if image_key not in first:
    raise ValueError(f"data set {name!r}: examples have keys {sorted(first)}, "
                     f"no {image_key!r}")
  if lazy:
    # Labels now (one pass over the records), images decoded on use; the
    # pass costs one read of the split, its images are not kept.
    from tljax.data import images  # pylint: disable=g-import-not-at-top
    x = images.tfds_images(source, image_key, name, options)
    y = num_classes = None
    if label_key in first:
      y = np.asarray([int(source[i][label_key]) for i in range(n)], np.int32)
      feat = builder.info.features[label_key]
      num_classes = int(getattr(feat, "num_classes", int(y.max()) + 1))
    return x, y, num_classes
  x = np.stack([np.asarray(source[i][image_key]) for i in range(n)])
  x = x.astype(np.float32)
  if np.issubdtype(np.asarray(first[image_key]).dtype, np.integer):
    x = x / 255.0
  y = None
  num_classes = None
  if label_key in first:
    y = np.asarray([int(source[i][label_key]) for i in range(n)], np.int32)
    feat = builder.info.features[label_key]
    num_classes = int(getattr(feat, "num_classes", int(y.max()) + 1))
  return x, y, num_classes


# ------------------------------------------------------------------ public
def _subset(x, y, num_classes, *, classes, labels_per_class, num_examples,
            seed, relabel, name):
  if classes is not None:
    if y is None:
      raise ValueError(f"data set {name!r}: a class subset needs labels")
    classes = list(classes)
    bad = [c for c in classes if not 0 <= c < (num_classes or 0)]
    if bad:
      raise ValueError(f"data set {name!r}: classes {bad} are not in "
                       f"[0, {num_classes})")
    keep = np.isin(y, classes)
    x, y = x[keep], y[keep]
    if relabel:
      lut = np.full(num_classes, -1, np.int32)
      lut[classes] = np.arange(len(classes))
      y, num_classes = lut[y], len(classes)
  rng = np.random.default_rng(seed)
  if labels_per_class is not None:
    if y is None:
      raise ValueError(f"data set {name!r}: labels_per_class needs labels")
    if labels_per_class < 1:
      raise ValueError(f"labels_per_class must be >= 1, got "
                       f"{labels_per_class}")
    idx = []
    for c in np.unique(y):
      cidx = np.flatnonzero(y == c)
      idx.append(rng.choice(cidx, min(labels_per_class, len(cidx)),
                            replace=False))
    idx = rng.permutation(np.concatenate(idx))
    x, y = x[idx], y[idx]
  if num_examples is not None and num_examples < 1:
    raise ValueError(f"num_examples must be >= 1 (or None for all), got "
                     f"{num_examples}")
  if num_examples is not None and num_examples < len(x):
    idx = rng.choice(len(x), num_examples, replace=False)
    x = x[idx]
    y = None if y is None else y[idx]
  return x, y, num_classes


def _classes_option(spec: str) -> tuple[str, list[int] | None]:
  """``(spec without it, classes)`` of a ``classes=`` option after ``?``
  (``mnist1d:clean?classes=0-4``, ``digits?classes=1,3,5``, ranges and
  single classes joined by commas); the other options stay in the spec."""
  head, q, options = spec.partition("?")
  items = options.split("&") if q else []
  found = [i for i in items if i.startswith("classes=")]
  if not found:
    return spec, None
  rest = [i for i in items if not i.startswith("classes=")]
  value = found[-1][len("classes="):]
  classes = []
  for part in value.split(","):
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
    if not m or (m.group(2) and not 0 <= int(m.group(2)) - int(m.group(1))
                 <= 1_000_000):
      raise ValueError(f"data set {spec!r}: classes={value!r} must be class "
                       "indices and ranges joined by commas, e.g. "
                       "?classes=0-4 or ?classes=1,3,5")
    lo = int(m.group(1))
    classes += range(lo, int(m.group(2) or lo) + 1)
  if len(found) > 1 or len(set(classes)) != len(classes):
    raise ValueError(f"data set {spec!r}: name each class once, in one "
                     "classes= option")
  return head + ("?" + "&".join(rest) if rest else ""), classes


def load(spec: str, split: str = "train", *, seed: int = 0,
         labels_per_class: int | None = None,
         classes: Sequence[int] | None = None, relabel: bool = True,
         num_examples: int | None = None,
         data_dir: str | None = None) -> Dataset:
  """Loads a data source by spec; see the module docstring.

  Args:
    spec: ``mnist1d[:preset]``, ``digits[:preset]``, ``moons[:angle]``,
      ``coil[:all|1|2]``, ``npz:<path>``, ``tfds:<name>[:<train split>[:<test split>]]`` or
      ``folder:<root>``; image options after ``?``
      (:mod:`tljax.data.images`), and on any source ``?classes=0-4`` (or
      ``1,3,5``): keep only these classes, as ``classes`` does.
    split: ``train`` or ``test``.
    seed: seed for the label budget and example subsets.
    labels_per_class: keep this many labelled examples of each class (the
      label budget), chosen with ``seed``.
    classes: keep only these classes.
    relabel: with ``classes``, map them to ``0..len(classes)-1``.
    num_examples: keep at most this many examples.
    data_dir: TFDS data directory.

  Returns:
    A :class:`Dataset`.

  Raises:
    ValueError, FileNotFoundError, RuntimeError: with what was wrong and how
      to fix it (unknown source or preset, missing file or key, bad shape,
      labels out of range, unprepared TFDS set).
  """
  if split not in SPLITS:
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  if not isinstance(spec, str) or not spec:
    raise ValueError(f"a data spec is a non-empty string, got {spec!r}")
  base, spec_classes = _classes_option(spec)
  if spec_classes is not None:
    if classes is not None:
      raise ValueError(f"data set {spec!r}: classes are given twice, in the "
                       "spec (?classes=...) and as an argument; give one.")
    classes = spec_classes
  kind, _, arg = base.partition(":")
  key = "" if split == "train" else "_test"
  modality = None  # None: from the shape
  class_names = None
  if kind == "mnist1d":
    d = _mnist1d(arg or "clean")
    x, y, num_classes, modality = d["x" + key], d["y" + key], 10, "signal"
  elif kind == "digits":
    d = _digits(arg or "clean")
    x, y, num_classes, modality = d["x" + key], d["y" + key], 10, "image"
  elif kind == "coil":
    d = _coil(arg or "all")
    x, y, num_classes, modality = d["x" + key], d["y" + key], 20, "image"
  elif kind == "moons":
    d = _moons(arg)
    x, y, num_classes, modality = d["x" + key], d["y" + key], 2, "vector"
  elif kind == "npz":
    x, y, num_classes, modality = _npz(arg, split, spec)
  elif kind == "tfds":
    x, y, num_classes = _tfds(arg, split, spec,
                              data_dir or os.environ.get("TFDS_DATA_DIR"))
  elif kind == "folder":
    from tljax.data import images  # pylint: disable=g-import-not-at-top
    x, y, num_classes, class_names = images.folder(arg, split, spec)
  else:
    raise ValueError(f"unknown data source {kind!r} in spec {spec!r}; use "
                     "mnist1d[:preset], digits[:preset], moons[:angle], "
                     "coil[:all|1|2], npz:<path>, tfds:<name> or "
                     "folder:<root>")
  lazy = None
  if not isinstance(x, np.ndarray):
    # Lazy images: select on their indices, decode nothing here.
    lazy, x, modality = x, np.arange(len(x)), "image"
  elif not np.all(np.isfinite(x)):
    raise ValueError(f"data set {spec!r} ({split}): x contains NaN or Inf; "
                     "clean or impute the data first.")
  x, y, num_classes = _subset(
      x, y, num_classes, classes=classes, labels_per_class=labels_per_class,
      num_examples=num_examples, seed=seed, relabel=relabel, name=spec)
  if len(x) == 0:
    raise ValueError(f"data set {spec!r} ({split}) is empty after selection")
  if lazy is not None:
    x = lazy.take(x)
  if class_names is not None and classes is not None and relabel:
    class_names = tuple(class_names[c] for c in classes)
  return Dataset(x=x, y=y, num_classes=num_classes, name=spec,
                 modality=modality, class_names=class_names)


# ---------------------------------------------------- class descriptions
def load_attributes(path: str, num_classes: int
                    ) -> tuple[np.ndarray, tuple[str, ...]]:
  """A class-attribute matrix ``(num_classes, M)`` and its attribute names
  from an npz file holding ``attributes`` (and optionally ``names``): the
  class descriptions of zero-shot learning.

  Raises:
    FileNotFoundError, ValueError: on a missing file or key, a matrix of
      the wrong shape, or non-finite values.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no class-description file at {path!r}; save one with "
        "np.savez(path, attributes=A) with A of shape (num_classes, M).")
  with np.load(path, allow_pickle=False) as f:
    if "attributes" not in f:
      raise ValueError(f"{path} has keys {sorted(f.keys())}; it needs "
                       "'attributes' of shape (num_classes, M).")
    a = np.asarray(f["attributes"], np.float32)
    names = (tuple(str(n) for n in f["names"]) if "names" in f
             else tuple(f"attr_{i}" for i in range(a.shape[-1])))
  if a.ndim != 2 or a.shape[0] != num_classes:
    raise ValueError(f"{path}: attributes must have shape ({num_classes}, "
                     f"M), one row per class; got {a.shape}.")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{path}: attributes contain NaN or Inf.")
  if len(names) != a.shape[1]:
    raise ValueError(f"{path}: {len(names)} names for {a.shape[1]} "
                     "attributes.")
  return a, names
