"""Image data decoded as it is needed: class-per-folder trees and tfds sets.

    load("folder:/data/office31/amazon")             # <root>/<class>/*.jpg
    load("folder:/data/office31/amazon?test=all")    # the UDA protocol
    load("folder:/data/cub?size=448&resize=512")     # other image sizes
    load("tfds:imagenette?size=160")                 # a tfds image set

A ``folder:<root>`` spec names a torchvision ``ImageFolder`` tree (the
Office-31 and Office-Home layout: one sub-folder per class, ``<root>/<class>/
*.jpg``, a domain being ``folder:<root>/<domain>``). Classes are the sorted
sub-folder names (labels ``0..C-1``); images are files ending in one of
:data:`IMAGE_EXTENSIONS` (any case). Splits: ``<root>/train`` and
``<root>/test`` (or ``<root>/val``) sub-trees if there are both; otherwise
a fixed 20% of each class is the test split, or with ``test=all`` both
splits are every image (the unsupervised domain adaptation protocol of
TLlib, where the target domain is trained on without labels and tested on
whole).

Options after ``?`` (``&``-separated, also on ``tfds:`` specs, where they
turn on this lazy path):

==============  ===========================================================
``size=224``    side of the square images the model sees
``resize=R``    evaluation: resize to ``R`` then center-crop ``size``
                (default ``round(size * 256 / 224)``, 256 for 224)
``fit=short``   ``short``: resize the shorter side to ``R`` (torchvision's
                ImageNet evaluation); ``square``: resize to ``R x R``, for
                training too, before the random crop (TLlib's
                ``ResizeImage(256)``)
``min_scale``   smallest crop area of the random resized crop (0.08)
``test=``       ``holdout`` (default) or ``all``; folders only
==============  ===========================================================

The examples are an :class:`ImageArray`: a lazy ``(n, size, size, 3)``
float32 array. Indexing it decodes (PIL), resizes, center-crops and
normalises with the ImageNet mean and std (the evaluation transform), so
evaluation, feature caches and plots read it as an array. Training batches
(:func:`tljax.data.batches` on arrays holding one) go through grain
(:func:`batches`): worker threads decode each example with the standard
augmentation (random resized crop with scale ``(min_scale, 1)`` and aspect
ratio ``(3/4, 4/3)``, horizontal flip at p = 0.5; Szegedy et al., 2015), its
randomness drawn from ``(seed, step, position in the global batch)`` alone,
so the batch at a step is a pure function of ``(seed, step)`` and a resumed
run sees exactly the images an uninterrupted one would. An image that
cannot be read stops the run with an error naming the file.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import zlib
from typing import Callable, Iterator, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif",
                    ".tiff", ".webp")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
OPTIONS = ("size", "resize", "fit", "min_scale", "test")
_BIG = 2 ** 62  # the length of an endless grain stream


# ------------------------------------------------------------- transforms
@dataclasses.dataclass(frozen=True)
class Transform:
  """The evaluation and training transforms of one image set."""
  size: int = 224
  resize: int = 0       # 0: round(size * 256 / 224)
  fit: str = "short"    # short | square
  min_scale: float = 0.08

  @property
  def resize_to(self) -> int:
    return self.resize or int(round(self.size * 256 / 224))

  def _fit(self, img):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    r = self.resize_to
    w, h = img.size
    if self.fit == "square":
      size = (r, r)
    elif w <= h:
      size = (r, int(r * h / w))
    else:
      size = (int(r * w / h), r)
    return img if img.size == size else img.resize(size, Image.BILINEAR)

  def evaluate(self, img) -> np.ndarray:
    """Resize (:attr:`fit`) and center-crop to ``size``: uint8 HWC."""
    img = self._fit(img)
    w, h = img.size
    top = int(round((h - self.size) / 2))
    left = int(round((w - self.size) / 2))
    return np.asarray(img.crop((left, top, left + self.size,
                                top + self.size)))

  def crop_box(self, width: int, height: int, rng: np.random.Generator
               ) -> tuple[int, int, int, int]:
    """A random resized crop's ``(left, top, w, h)``: area fraction in
    ``[min_scale, 1]``, log-uniform aspect ratio in ``[3/4, 4/3]``; after
    ten misses, the whole image cut to that ratio range."""
    area = width * height
    for _ in range(10):
      target = area * rng.uniform(self.min_scale, 1.0)
      ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
      w = int(round(np.sqrt(target * ratio)))
      h = int(round(np.sqrt(target / ratio)))
      if 0 < w <= width and 0 < h <= height:
        return (int(rng.integers(0, width - w + 1)),
                int(rng.integers(0, height - h + 1)), w, h)
    ratio = width / height
    if ratio < 3 / 4:
      w, h = width, int(round(width / (3 / 4)))
    elif ratio > 4 / 3:
      w, h = int(round(height * (4 / 3))), height
    else:
      w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h

  def augment(self, img, rng: np.random.Generator) -> np.ndarray:
    """Random resized crop to ``size`` and a random horizontal flip."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    if self.fit == "square":
      img = self._fit(img)
    left, top, w, h = self.crop_box(*img.size, rng)
    out = img.crop((left, top, left + w, top + h)).resize(
        (self.size, self.size), Image.BILINEAR)
    x = np.asarray(out)
    return x[:, ::-1] if rng.random() < 0.5 else x


def normalize(images: np.ndarray) -> np.ndarray:
  """uint8 RGB images (..., 3) to float32 with ImageNet's mean and std."""
  return ((np.asarray(images, np.float32) / 255.0 - IMAGENET_MEAN)
          / IMAGENET_STD).astype(np.float32)


def parse_options(options: str, name: str, *, folder: bool) -> dict:
  """``size=224&fit=square`` to a dict, checked; see the module doc."""
  out = {}
  for item in filter(None, options.split("&")):
    key, eq, value = item.partition("=")
    if not eq or key not in OPTIONS or (key == "test" and not folder):
      allowed = [o for o in OPTIONS if folder or o != "test"]
      raise ValueError(f"data set {name!r}: unknown image option {item!r}; "
                       f"options are key=value pairs joined by & of "
                       f"{allowed}, e.g. ?size=224&fit=square")
    try:
      if key in ("size", "resize"):
        v = int(value)
        if v < 1:
          raise ValueError
      elif key == "min_scale":
        v = float(value)
        if not 0 < v <= 1:
          raise ValueError
      else:
        v = value
        if v not in {"fit": ("short", "square"),
                     "test": ("holdout", "all")}[key]:
          raise ValueError
    except ValueError:
      what = {"size": "a positive integer", "resize": "a positive integer",
              "min_scale": "a number in (0, 1]", "fit": "short or square",
              "test": "holdout or all"}[key]
      raise ValueError(f"data set {name!r}: image option {key} must be "
                       f"{what}, got {value!r}") from None
    out[key] = v
  if out.get("resize", out.get("size", 224)) < out.get("size", 224):
    raise ValueError(f"data set {name!r}: resize={out['resize']} is smaller "
                     f"than size={out.get('size', 224)}; the center crop "
                     "must fit in the resized image.")
  return out


# ------------------------------------------------------------ the array
_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
  global _POOL
  if _POOL is None:
    _POOL = concurrent.futures.ThreadPoolExecutor(
        min(16, os.cpu_count() or 1), thread_name_prefix="tljax-images")
  return _POOL


class ImageArray:
  """A lazy ``(n, size, size, 3)`` float32 array of images.

  Args:
    read: ``read(i) -> PIL.Image`` for ``i`` in ``range(len(names))``.
    names: what each image is called in errors (its file).
    transform: the :class:`Transform`.
    indices: the images of this view (default all).

  ``a[i]``, ``a[idx]`` and ``np.asarray(a)`` decode with the evaluation
  transform (threads for many); :meth:`augmented` gives one training
  example; :meth:`take` a view of some examples, decoding nothing.
  """

  ndim = 4
  dtype = np.dtype(np.float32)

  def __init__(self, read: Callable, names: Sequence[str],
               transform: Transform, indices: np.ndarray | None = None):
    self._read, self.names, self.transform = read, names, transform
    self.indices = (np.arange(len(names)) if indices is None
                    else np.asarray(indices, np.int64))

  def __len__(self) -> int:
    return len(self.indices)

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (len(self), self.transform.size, self.transform.size, 3)

  def take(self, idx) -> "ImageArray":
    """The view of examples ``idx`` (ints or a boolean mask)."""
    return ImageArray(self._read, self.names, self.transform,
                      self.indices[np.asarray(idx)])

  def image(self, i: int):
    """Example ``i`` decoded as an RGB PIL image (no transform)."""
    j = int(self.indices[i])
    try:
      with self._read(j) as img:
        img.load()
        return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
      raise ValueError(f"cannot read image {self.names[j]} ({e}); remove or "
                       "replace the file.") from None

  def evaluated(self, i: int) -> np.ndarray:
    """Example ``i`` with the evaluation transform, normalised."""
    return normalize(self.transform.evaluate(self.image(i)))

  def augmented(self, i: int, rng: np.random.Generator) -> np.ndarray:
    """Example ``i`` with the training augmentation drawn from ``rng``."""
    return normalize(self.transform.augment(self.image(i), rng))

  def __getitem__(self, key):
    if isinstance(key, (int, np.integer)):
      return self.evaluated(range(len(self))[key])
    idx = np.arange(len(self))[key]
    out = np.empty((len(idx),) + self.shape[1:], np.float32)
    if len(idx) <= 2:
      for k, i in enumerate(idx):
        out[k] = self.evaluated(i)
      return out

    def fill(k):
      out[k] = self.evaluated(idx[k])
    list(_pool().map(fill, range(len(idx))))
    return out

  def __array__(self, dtype=None, copy=None):
    del copy
    x = self[:]
    return x if dtype is None else x.astype(dtype, copy=False)

  def __repr__(self):
    return (f"ImageArray({len(self)} images, {self.transform}, e.g. "
            f"{self.names[int(self.indices[0])] if len(self) else '-'})")


def is_lazy(arrays: dict) -> bool:
  """Whether ``arrays`` holds an :class:`ImageArray` (batches decode)."""
  return any(isinstance(v, ImageArray) for v in arrays.values())


# -------------------------------------------------------------- folders
def _open(path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return Image.open(path)


def _class_tree(root: str, name: str) -> tuple[list[str], list[int], list[str]]:
  """Image files, labels and class names of one class-per-folder tree."""
  classes = sorted(e.name for e in os.scandir(root)
                   if e.is_dir() and not e.name.startswith("."))
  if not classes:
    raise ValueError(f"data set {name!r}: {root} has no class folders; "
                     "put each class's images in its own sub-folder, "
                     "<root>/<class>/*.jpg (the ImageFolder layout).")
  files, labels = [], []
  for label, cls in enumerate(classes):
    d = os.path.join(root, cls)
    imgs = sorted(
        os.path.join(dp, f) for dp, dns, fs in os.walk(d, followlinks=True)
        for f in fs if f.lower().endswith(IMAGE_EXTENSIONS)
        and not f.startswith("."))
    if not imgs:
      raise ValueError(f"data set {name!r}: class folder {d} holds no images "
                       f"(files ending in {', '.join(IMAGE_EXTENSIONS)}); "
                       "add some or remove the folder.")
    files += imgs
    labels += [label] * len(imgs)
  return files, labels, classes


def _holdout(labels: np.ndarray, split: str) -> np.ndarray:
  """A fixed 20% of each class (at least one image of a class of two or
  more) for ``test``, the rest for ``train``."""
  keep = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    idx = idx[np.random.default_rng((0, int(c))).permutation(len(idx))]
    cut = max(1, len(idx) // 5) if len(idx) >= 2 else 0
    keep.append(idx[:cut] if split == "test" else idx[cut:])
  return np.sort(np.concatenate(keep))


def folder(arg: str, split: str, name: str
           ) -> tuple[ImageArray, np.ndarray, int, tuple[str, ...]]:
  """The ``split`` of a ``folder:`` spec: ``(images, labels, number of
  classes, class names)``; see the module doc.

  Raises:
    FileNotFoundError: if the root is not a directory.
    ValueError: on no class folders, a class with no images, an unknown
      option.
  """
  root, _, options = arg.partition("?")
  opts = parse_options(options, name, folder=True)
  test = opts.pop("test", "holdout")
  if not root:
    raise ValueError("folder:<root> needs a directory, e.g. "
                     "folder:/data/office31/amazon")
  root = os.path.expanduser(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(
        f"data set {name!r}: no directory {root!r}; give folder:<root> with "
        "one sub-folder of images per class (<root>/<class>/*.jpg).")
  test_dir = next((os.path.join(root, d) for d in ("test", "val")
                   if os.path.isdir(os.path.join(root, d))), None)
  if os.path.isdir(os.path.join(root, "train")) and test_dir:
    if test == "all":
      raise ValueError(f"data set {name!r}: {root} has train/ and "
                       f"{os.path.basename(test_dir)}/ splits, so test=all "
                       "does not apply; drop it (or point at one split).")
    files, labels, classes = _class_tree(
        os.path.join(root, "train") if split == "train" else test_dir, name)
    _, _, train_classes = _class_tree(os.path.join(root, "train"), name)
    if classes != train_classes:
      raise ValueError(f"data set {name!r}: the class folders of "
                       f"{test_dir} differ from those of {root}/train; "
                       "both splits need the same classes.")
    labels = np.asarray(labels, np.int32)
  else:
    files, labels, classes = _class_tree(root, name)
    labels = np.asarray(labels, np.int32)
    if test == "holdout":
      keep = _holdout(labels, split)
      files, labels = [files[i] for i in keep], labels[keep]
  images = ImageArray(lambda i: _open(files[i]), files, Transform(**opts))
  return images, labels, len(classes), tuple(classes)


# ----------------------------------------------------------------- tfds
def tfds_images(source, image_key: str, name: str, options: str
                ) -> ImageArray:
  """An :class:`ImageArray` over a tfds data source whose ``image_key``
  holds uint8 image arrays (or encoded image bytes)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  opts = parse_options(options, name, folder=False)

  def read(i):
    v = source[i][image_key]
    if isinstance(v, (bytes, np.bytes_)):
      return Image.open(io.BytesIO(v))
    v = np.asarray(v)
    return Image.fromarray(v[..., 0] if v.ndim == 3 and v.shape[-1] == 1
                           else v)
  return ImageArray(read, _Names(name, len(source)), Transform(**opts))


class _Names:
  """``name[i]``: what example ``i`` of a tfds set is called in errors."""

  def __init__(self, name: str, n: int):
    self.name, self.n = name, n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return f"{self.name}[{i}]"


# -------------------------------------------------------------- batches
def batches(arrays: dict, batch_size: int, *, seed: int, start_step: int,
            process_index: int, process_count: int,
            num_threads: int | None = None) -> Iterator[dict]:
  """:func:`tljax.data.batches` of arrays holding :class:`ImageArray` s:
  the same examples at each step (the same seeded epoch permutations and
  per-process slices), decoded with augmentation by grain's reader
  threads over a random-access stream of (step, position) elements.

  Args:
    arrays: same-length arrays, some of them :class:`ImageArray` s.
    batch_size: the global batch size.
    seed, start_step, process_index, process_count: as
      :func:`tljax.data.batches`.
    num_threads: decoding threads (default ``min(16, cpus)``).
  """
  import grain  # pylint: disable=g-import-not-at-top
  from tljax.data import batching  # pylint: disable=g-import-not-at-top
  n = batching.num_examples(arrays)
  per = batch_size // process_count

  @functools.lru_cache(maxsize=16)
  def step_indices(step):
    return batching.local_batch_indices(
        n, batch_size, step, seed, process_index=process_index,
        process_count=process_count)

  salts = {k: zlib.crc32(k.encode()) for k in arrays}

  def element(pos):
    step, j = divmod(pos, per)
    i = step_indices(step)[j]
    out = {}
    for k, v in arrays.items():
      if isinstance(v, ImageArray):
        # The position in the global batch: the same draws on any number
        # of processes.
        rng = np.random.default_rng(
            (seed, step, process_index * per + j, salts[k]))
        out[k] = v.augmented(i, rng)
      else:
        out[k] = v[i]
    return out

  threads = num_threads or min(16, os.cpu_count() or 1)
  ds = grain.MapDataset.range(start_step * per, _BIG).map(element)
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=threads, prefetch_buffer_size=max(2 * per, 2 * threads))
                          ).batch(per)
  return iter(it)
