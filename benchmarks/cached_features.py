r"""Linear probe on cached features vs through the frozen backbone.

  nice python benchmarks/cached_features.py [--steps=1000] [--batch_size=64]

Trains the same head (same initialisation, batches and optimizer) two ways
on the mnist1d noisy domain with a CNN1D backbone:

- through: every step runs the frozen backbone forward and backward
  (``lr_rules`` freeze it; the step is the ordinary classification step);
- cached: the backbone runs once over the data set
  (:class:`tljax.methods.features.FeatureCache`), then every step is the
  head alone on the cached features.

Prints wall times (compilation excluded, feature extraction included in
"cached") and the largest difference between the two heads. The backbone is
randomly initialised: speed does not depend on its values.
"""

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tljax import data  # noqa: E402
from tljax import models  # noqa: E402
from tljax import optim  # noqa: E402
from tljax.methods import features  # noqa: E402
from tljax.methods import supervised  # noqa: E402
from tljax.train import trainer as trainer_lib  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--batch_size", type=int, default=64)
  ap.add_argument("--data", default="mnist1d:noisy")
  args = ap.parse_args()
  ds = data.load(args.data)
  model = models.Classifier(models.CNN1D(), ds.num_classes)
  params = models.init_params(model, ds.example_shape, 0)
  run = functools.partial(dict, batch_size=args.batch_size, seed=0,
                          rng=jax.random.key(0))

  rules = [("backbone/.*", None), (".*", 1.0)]
  tx = optim.make_optimizer(params, learning_rate=1e-3, lr_rules=rules)
  through = trainer_lib.Trainer(supervised.make_step(model, tx), tx,
                                parallel="single")
  head = features.head_params(params)
  htx = optim.make_optimizer(head, learning_rate=1e-3)
  # A dense head: one lax.scan beats a Python loop (see tljax.train.Trainer).
  cached = trainer_lib.Trainer(features.make_step(model, htx), htx,
                               parallel="single", scan=True)

  # Warm up (compile) both with the step count used below.
  feats0 = features.extract_features(model, params, ds.x)
  through.train_from(params, ds.arrays(), num_steps=args.steps, **run())
  cached.train_from(head, {"features": feats0, "y": ds.y},
                    num_steps=args.steps, **run())

  t = time.perf_counter()
  s1, _ = through.train_from(params, ds.arrays(), num_steps=args.steps,
                             **run())
  jax.block_until_ready(s1)
  t_through = time.perf_counter() - t

  t = time.perf_counter()
  cache = features.FeatureCache.build(model, params, ds.x)
  t_extract = time.perf_counter() - t
  s2, _ = cached.train_from(head, {"features": cache.features, "y": ds.y},
                            num_steps=args.steps, **run())
  jax.block_until_ready(s2)
  t_cached = time.perf_counter() - t

  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(s1.params["head"]), jax.tree.leaves(s2.params["head"])))
  print(f"{args.data}: {len(ds)} examples, CNN1D backbone, {args.steps} "
        f"steps of {args.batch_size}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}")
  print(f"through the frozen backbone: {t_through:7.2f} s")
  print(f"cached features:             {t_cached:7.2f} s "
        f"(extraction {t_extract:.2f} s)")
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(s2.params["head"]), jax.tree.leaves(head)))
  print(f"speed-up: {t_through / t_cached:.1f}x; max |head difference| "
        f"{diff:.2e} (the head moved by up to {moved:.2e} in training)")


if __name__ == "__main__":
  main()
