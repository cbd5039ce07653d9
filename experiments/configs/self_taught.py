r"""Self-taught learning (:mod:`tljax.methods.self_taught`): an autoencoder
pretrained on unlabelled data from other domains, its features reused on a
labelled target with few labels, against raw inputs, random features and
training from scratch; plus k-means clustering of the target test set on
each kind of features.

  python experiments/self_taught.py --workdir=/tmp/tljax/self_taught

Measured on this 2-core CPU (2026-11-22, shared with other agents' jobs;
docs/results_other_methods.md has the tables): 12,000 unlabelled examples of
mnist1d standard/noisy/sheared -> mnist1d:clean, 5 seeds, target accuracy at
5 / 20 labels per class: raw_linear 24.4 / 34.7%, random_linear 24.7 / 34.4%,
self_taught_linear 26.8 / 39.4%, scratch 26.4 / 42.6%,
self_taught_finetune 27.1 / 44.5%; k-means on the target test set, ARI
(NMI): raw 0.107 (0.290), PCA 0.112 (0.296), untrained encoder 0.080
(0.230), self-taught features 0.140 (0.360); 131 s.

The CNN1D encoder: ``--config=experiments/configs/self_taught.py:cnn1d``.
"""

import ml_collections

from tljax import models


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  args = [a for a in arg.split(",") if a]
  unknown = [a for a in args if a not in ("quick", "mlp", "cnn1d")]
  if unknown:
    raise ValueError(f"unknown config argument(s) {unknown}; use mlp or "
                     "cnn1d (the encoder) and/or quick")
  config = ml_collections.ConfigDict()
  # Unlabelled data (labels, if any, are never read), and the target task.
  config.unlabelled = ("mnist1d:standard", "mnist1d:noisy",
                       "mnist1d:sheared")
  config.unlabelled_per_source = -1   # cap per source; -1 all
  config.target = "mnist1d:clean"
  config.budgets = (5, 20)            # target labels per class
  config.strategies = ("raw_linear", "random_linear", "self_taught_linear",
                       "scratch", "self_taught_finetune")
  config.num_seeds = 5
  config.data_dir = ""
  config.seed = 0
  config.plot = True

  # The encoder; its last layer is the code.
  config.model = models.model_config("cnn1d" if "cnn1d" in args else "mlp",
                                     mlp=dict(features=(256, 64)),
                                     cnn1d=dict(channels=(32, 32, 32),
                                                dense=32))
  config.decoder_features = (256,)
  config.noise_std = 0.3              # denoising autoencoder input noise
  config.sparsity = 0.05              # L1 weight on the code (sparse codes)

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "constant"
  config.optim.grad_clip_norm = 1.0

  # The *_linear strategies' heads: a linear head on fixed features wants a
  # larger step than a deep net (the rest of config.optim applies to it).
  config.linear = ml_collections.ConfigDict()
  config.linear.optim = ml_collections.ConfigDict({"learning_rate": 1e-2})
  config.kmeans_restarts = 10          # k-means n_init (best inertia kept)

  config.pretrain_steps = 3000
  config.target_steps = 300
  config.batch_size = 64
  config.eval_every = 1000
  config.log_every = 500
  config.checkpoint_every = 1000   # and at SIGTERM / Ctrl-C
  config.parallel = "auto"

  if "quick" in args:
    config.model.name = "mlp"
    config.model.mlp.features = (32, 16)
    config.decoder_features = (32,)
    config.unlabelled_per_source = 100
    config.kmeans_restarts = 1
    config.budgets = (2,)
    config.num_seeds = 2
    config.pretrain_steps = 8
    config.target_steps = 4
    config.batch_size = 16
    config.eval_every = 4
    config.log_every = 4
  return config
