r"""Zero-shot learning: train on seen digits, recognise unseen ones from
their seven-segment descriptions (:mod:`tljax.methods.zero_shot`).

  python experiments/zero_shot.py --workdir=/tmp/tljax/zsl

Other unseen digits, or mnist1d instead of the 8x8 digits:

  python experiments/zero_shot.py --workdir=/tmp/tljax/zsl_m1d \
      --config=experiments/configs/zero_shot.py:mnist1d

Your own data and class descriptions (``attributes``: (num_classes, M)):

  python experiments/zero_shot.py --workdir=/tmp/tljax/mine \
      --config.data=npz:data.npz --config.descriptions=npz:attributes.npz \
      "--config.unseen_classes=(3,6,9)"

Measured on this 2-core CPU (2026-11-22, shared with other agents' jobs;
docs/results_other_methods.md has the full tables): the first command, 5 runs
each with its own random split of 3 unseen digits, unseen-class accuracy
(chance 33.3%) dap 46.6 ± 9.1%, embedding 37.4 ± 11.0%; seen-class accuracy
79.4% / 94.9%; 65 s. The mnist1d command: dap 29.4 ± 11.9%, embedding
40.1 ± 15.2% (at chance: seven-segment descriptions say nothing about
mnist1d's 1-D templates); 57 s.
"""

import ml_collections

from tljax import models

DATA = {"digits": ("digits:clean", "mlp"),
        "mnist1d": ("mnist1d:clean", "cnn1d")}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  args = [a for a in arg.split(",") if a]
  unknown = [a for a in args if a not in DATA and a != "quick"]
  if unknown:
    raise ValueError(f"unknown config argument(s) {unknown}; use any of "
                     f"{sorted(DATA)} and/or quick")
  data, backbone = DATA[next((a for a in args if a in DATA), "digits")]
  config = ml_collections.ConfigDict()
  config.data = data
  config.descriptions = "segments+loop"  # segments | segments+loop | npz:<path>
  # Empty: each run draws its own random valid split of num_unseen classes.
  config.unseen_classes = ()        # e.g. (3, 6, 9): one fixed split
  config.num_unseen = 3
  config.seen_classes = ()          # with unseen_classes; empty: the rest
  config.max_train_examples = -1    # cap on seen-class training examples
  config.data_dir = ""
  config.seed = 0
  config.num_seeds = 5
  config.methods = ("dap", "embedding")
  config.plot = True

  config.model = models.model_config(backbone)  # auto | mlp | cnn1d | cnn2d
  config.model.mlp.features = (32,)
  config.dap_prior = "seen"         # seen (Lampert et al.) | uniform
  config.embed_dim = 32             # joint space of the embedding method
  config.class_hidden = ()          # g(a): () is linear (ALE's bilinear form)
  config.normalize = True           # cosine compatibility f(x).g(a)
  config.margin = 1.0               # hinge ranking margin k
  config.reduction = "max"          # max (ALE) | sum (DeViSE)

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "cosine"
  config.optim.warmup_steps = 50
  config.optim.grad_clip_norm = 1.0
  config.optim.lr_rules = ()

  config.num_steps = 500
  config.batch_size = 64
  config.eval_every = 250
  config.log_every = 250
  config.checkpoint_every = 250    # and at SIGTERM / Ctrl-C
  config.parallel = "auto"

  if "quick" in args:
    config.model.name = "mlp"
    config.num_seeds = 2
    config.num_steps = 8
    config.optim.warmup_steps = 2
    config.eval_every = 4
    config.log_every = 4
    config.max_train_examples = 200
    config.batch_size = 16
  return config
