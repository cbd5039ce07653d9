r"""Does the image input pipeline keep up with the step? Images per second
from a folder of JPEGs to the device, against a ResNet-18 training step.

  python benchmarks/input_pipeline.py [--images=512] [--batches=12] \
      [--steps=3] [--threads=0] [--out=benchmarks/results]

Writes ``--images`` 256x256 JPEGs (quality 90, smooth random pictures in 8
class folders) to a temporary directory, reads them as
``folder:<dir>?size=224`` (:mod:`tljax.data.images`) and times
``--batches`` training batches of 32 (decode, random resized crop to 224,
flip, normalise, in grain's reader threads; ``--threads`` of them, 0: the
default ``min(16, cpus)``), each put on the device and waited for, after
one warm-up batch. Then it times ``--steps`` compiled ResNet-18 training
steps (tljax.models resnet18, SGD with momentum, batch 32 at 224x224) on
the same device, after compiling. Reported: images/s of the pipeline, the
step's images/s, and their ratio (above 1: the input does not starve the
step). Prints one JSON object and writes it to
``<out>/input_pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import jax
import numpy as np


def write_jpegs(root: str, n: int, size: int = 256, classes: int = 8):
  """Smooth random pictures (low-resolution noise, upsampled, plus grain):
  JPEG sizes near photographs', unlike pure noise."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  nbytes = 0
  for i in range(n):
    d = os.path.join(root, f"class_{i % classes}")
    os.makedirs(d, exist_ok=True)
    low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((size, size),
                                                 Image.BICUBIC), np.int16)
    img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255)
    path = os.path.join(d, f"{i:05d}.jpg")
    Image.fromarray(img.astype(np.uint8)).save(path, quality=90)
    nbytes += os.path.getsize(path)
  return nbytes / n


def pipeline_rate(spec: str, batch: int, batches: int, threads: int
                  ) -> float:
  from tljax import data  # pylint: disable=g-import-not-at-top
  from tljax.data import images  # pylint: disable=g-import-not-at-top
  ds = data.load(spec, "train")
  it = images.batches(ds.arrays(), batch, seed=0, start_step=0,
                      process_index=0, process_count=1,
                      num_threads=threads or None)
  jax.block_until_ready(jax.device_put(next(it)))  # threads up, warm
  t = time.perf_counter()
  for _ in range(batches):
    jax.block_until_ready(jax.device_put(next(it)))
  return batch * batches / (time.perf_counter() - t)


def step_rate(batch: int, steps: int) -> tuple[float, float]:
  import optax  # pylint: disable=g-import-not-at-top
  from tljax import models  # pylint: disable=g-import-not-at-top
  from tljax.methods import supervised  # pylint: disable=g-import-not-at-top
  from tljax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  model = models.build_classifier(models.model_config("resnet18"), 8,
                                  (224, 224, 3), "image")
  params, model_state = models.init_variables(model, (224, 224, 3), 0)
  tx = optax.sgd(0.01, momentum=0.9)
  state = state_lib.create_train_state(params, tx, model_state=model_state)
  step = jax.jit(supervised.make_step(model, tx), donate_argnums=(0,))
  rng = np.random.default_rng(0)
  b = jax.device_put({
      "x": rng.normal(size=(batch, 224, 224, 3)).astype(np.float32),
      "y": rng.integers(0, 8, batch).astype(np.int32)})
  key = jax.random.key(0)
  t = time.perf_counter()
  state, _ = step(state, b, key)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(steps):
    state, _ = step(state, b, key)
  jax.block_until_ready(state)
  return batch * steps / (time.perf_counter() - t), compile_s


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--images", type=int, default=512)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--batches", type=int, default=12)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--threads", type=int, default=0)
  p.add_argument("--out", default=os.path.join(os.path.dirname(
      os.path.abspath(__file__)), "results"))
  a = p.parse_args()
  with tempfile.TemporaryDirectory() as root:
    t = time.perf_counter()
    mean_bytes = write_jpegs(root, a.images)
    write_s = time.perf_counter() - t
    pipe = pipeline_rate(f"folder:{root}?size=224&test=all", a.batch,
                         a.batches, a.threads)
  step, compile_s = step_rate(a.batch, a.steps)
  out = {
      "pipeline_images_per_s": pipe,
      "resnet18_step_images_per_s": step,
      "resnet18_step_seconds": a.batch / step,
      "pipeline_over_step": pipe / step,
      "resnet18_compile_seconds": compile_s,
      "jpeg_mean_kib": mean_bytes / 1024, "write_seconds": write_s,
      "images": a.images, "batch": a.batch, "batches": a.batches,
      "steps": a.steps,
      "threads": a.threads or min(16, os.cpu_count() or 1),
      "device": str(jax.devices()[0]), "cpus": os.cpu_count(),
      "load_average": os.getloadavg()[0], "python": platform.python_version(),
      "jax": jax.__version__}
  print(json.dumps(out, indent=1))
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "input_pipeline.json"), "w") as f:
    json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
