r"""Metric learning: an embedding trained on some classes, evaluated by
retrieval and verification on held-out classes.

  python experiments/metric.py --workdir=/tmp/tljax/triplet \
      --config=experiments/configs/metric.py:triplet
  python experiments/metric.py --workdir=/tmp/tljax/siamese \
      --config=experiments/configs/metric.py:contrastive
  # Any loss by name, e.g. metric.py:supcon, or --config.loss=X with X one
  # of triplet, contrastive, supcon, ntxent, multi_similarity, arcface,
  # cosface, proxy_anchor (their settings: --config.supcon.temperature,
  # --config.multi_similarity.epsilon, --config.arcface.margin, ...).
  # Append ",quick" (metric.py:triplet,quick) for a seconds-long smoke run.

mnist1d (standard preset): train on digits 0-4 (train split), evaluate
recall@1, recall@5, MAP@R, R-precision and verification ROC-AUC on digits
5-9 of the test split, beside the same metrics on the raw inputs
(results.json: raw_recall@1, raw_map@r, raw_auc, ...).

Measured on this 2-core CPU (one run each, seed 0; full table in
docs/results_metric_meta.md, from benchmarks/meta_learning.py
--suites=mnist1d), on the 517 held-out test examples:
  triplet      recall@1 0.654  MAP@R 0.377  AUC 0.831   (batch-all)
  contrastive  recall@1 0.528  MAP@R 0.300  AUC 0.787
  softmax      recall@1 0.634  MAP@R 0.335  AUC 0.791   (classifier)
  raw inputs   recall@1 0.663  MAP@R 0.115  AUC 0.575
Learned embeddings triple MAP@R but do not beat raw inputs on recall@1
(over seeds 0-2 triplet averages 0.617; docs/metric_learning_settings.md
has every setting tried and why). ",coil" / ",digits" run the same
protocol on real images: docs/results_metric_meta.md.
"""

import ml_collections

from tljax import models
from tljax.data import sources


# Held-out-class protocols by data set (``:coil``, ``:digits``).
DATA_PRESETS = sources.HELD_OUT_PROTOCOLS


def get_config(arg: str = "triplet") -> ml_collections.ConfigDict:
  parts = [p for p in arg.split(",") if p]
  quick = "quick" in parts
  data_preset = next((p for p in parts if p in DATA_PRESETS), "mnist1d")
  parts = [p for p in parts
           if p != "quick" and p not in DATA_PRESETS] or ["triplet"]

  config = ml_collections.ConfigDict()
  # triplet | contrastive | supcon | ntxent | multi_similarity | arcface |
  # cosface | proxy_anchor
  config.loss = parts[0]
  config.seed = 0
  config.data = "mnist1d:standard"   # the published MNIST-1D settings
  config.data_dir = ""
  config.train_classes = (0, 1, 2, 3, 4)
  config.test_classes = (5, 6, 7, 8, 9)
  # ",coil" / ",digits" (e.g. :protonet,coil): the same protocol on real
  # images of held-out classes.
  config.update(DATA_PRESETS[data_preset])

  config.model = models.model_config("auto")  # cnn1d for mnist1d
  if data_preset != "mnist1d":
    # Real images: an MLP on the flattened pixels, as the few-shot rows use
    # (the cnn2d on 32x32 COIL runs at ~5 steps/s on a 2-core CPU).
    config.model = models.model_config("mlp", features=(256,))
  config.embedding_dim = 64
  config.normalize = False
  config.init_from = ""              # e.g. a classifier's workdir/params
  config.dont_load = ("head/.*",)

  # Triplet: class-balanced batches, in-batch mining.
  # Batch-all: the best MAP@R of the one-change-at-a-time settings on
  # mnist1d (docs/metric_learning_settings.md); hard mining collapses.
  config.mining = "all"              # all | hard | semi_hard
  config.margin = 0.5
  config.distance = "l2"             # l2 | squared_l2 | cosine
  config.classes_per_batch = 5
  config.examples_per_class = 16
  # Contrastive: pair batches of classes_per_batch * examples_per_class.
  config.pos_margin = 0.0
  config.neg_margin = 2.0
  # The other losses, on the same class-balanced batches; their embeddings
  # are evaluated with the cosine distance (they see only directions).
  config.supcon = ml_collections.ConfigDict({"temperature": 0.1})
  config.ntxent = ml_collections.ConfigDict({"temperature": 0.1})
  config.multi_similarity = ml_collections.ConfigDict(
      {"alpha": 2.0, "beta": 50.0, "base": 0.5,
       "epsilon": 0.1})              # epsilon < 0: every pair, no miner
  config.arcface = ml_collections.ConfigDict({"margin": 0.5,  # radians
                                              "scale": 64.0})
  config.cosface = ml_collections.ConfigDict({"margin": 0.35, "scale": 64.0})
  config.proxy_anchor = ml_collections.ConfigDict({"margin": 0.1,
                                                   "alpha": 32.0})
  # arcface / cosface / proxy_anchor learn params['proxies'] (a row per
  # training class) at this multiple of the learning rate (Kim et al. 2020
  # use 100 for Proxy-Anchor).
  config.proxy_lr_multiplier = 1.0

  config.recall_ks = (1, 5)
  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "constant"

  config.num_steps = 2000 if data_preset == "mnist1d" else 1000
  config.eval_every = 500
  config.log_every = 250
  config.checkpoint_every = 500    # and at SIGTERM / Ctrl-C
  config.parallel = "auto"

  if quick:
    # One device keeps the smoke run to seconds; the mesh and pmap paths
    # are exercised by the tests (test_metric_learning, and
    # test_experiments_meta with --config.parallel=mesh).
    config.parallel = "single"
    config.num_steps = 6
    config.eval_every = 3
    config.log_every = 3
    config.model.name = "mlp"
    config.model.mlp.features = (16,)
    config.embedding_dim = 8
    config.classes_per_batch = 4
    config.examples_per_class = 4
  return config
