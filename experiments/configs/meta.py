r"""Few-shot meta-learning on held-out classes, and MAML on sinusoids.

  python experiments/meta.py --workdir=/tmp/tljax/meta_protonet \
      --config=experiments/configs/meta.py:protonet
  # methods: protonet | maml | anil (MAML, inner loop on the head only) |
  # metasgd (learned per-parameter inner rates) | reptile | hypernet |
  # baseline (pretrained embedding + nearest centroid); 5-shot:
  # --config.k_shot=5. Sinusoids (also sinusoid_reptile):
  python experiments/meta.py --workdir=/tmp/tljax/sine_maml \
      --config=experiments/configs/meta.py:sinusoid_maml
  # and sinusoid_pretrained (joint pretraining, fine-tuned the same way).
  # Append ",quick" (e.g. meta.py:protonet,quick) for a seconds-long smoke run.

Classification: mnist1d (standard preset), meta-train on digits 0-4 (train
split), test 5-way episodes of digits 5-9 (test split), mean accuracy and
95% interval over 600 test episodes. Every method uses the same MLP
(128, 128) backbone. The eval lines printed during training monitor 100
held-out episodes; nothing is selected on them (no early stopping).

Measured on this 2-core CPU (one run each, seed 0, 600 test episodes/tasks;
full table and the one command that made it in docs/results_metric_meta.md,
from benchmarks/meta_learning.py), 5-way accuracy 1-shot / 5-shot
(--config.k_shot=5), mean +- 95% interval:
  protonet  0.416 +- 0.007 / 0.574 +- 0.005   (2000 steps, ~10 s)
  maml      0.412 +- 0.007 / 0.537 +- 0.005   (1000 steps, ~20 s)
  maml --config.maml.first_order=True
            0.349 +- 0.007 / 0.512 +- 0.005
  hypernet  0.344 +- 0.006 / 0.441 +- 0.005   (2000 steps, ~15 s)
  baseline  0.332 +- 0.005 / 0.451 +- 0.005   (2000 steps, ~10 s)
  (nearest centroid on raw inputs: 0.270 / 0.335)
COIL-20 and digits (",coil" / ",digits", 3 seeds): the coil and digits
sections of docs/results_metric_meta.md.
Sinusoids, query MSE after 1 / 10 SGD steps at rate 0.01:
  sinusoid_maml        0.771 +- 0.059 / 0.379 +- 0.045   (4000 steps, ~15 s)
  sinusoid_pretrained  10.266 +- 2.228 / 3.156 +- 0.955 (2 of 600 tasks
                       diverged at 10 steps and are excluded)
"""

import ml_collections

from tljax import models
from tljax.data import sources


# Held-out-class protocols by data set (``:coil``, ``:digits``).
DATA_PRESETS = sources.HELD_OUT_PROTOCOLS


def get_config(arg: str = "protonet") -> ml_collections.ConfigDict:
  parts = [p for p in arg.split(",") if p]
  quick = "quick" in parts
  data_preset = next((p for p in parts if p in DATA_PRESETS), "mnist1d")
  parts = [p for p in parts
           if p != "quick" and p not in DATA_PRESETS] or ["protonet"]
  name = parts[0]
  sinusoid = name.startswith("sinusoid_")

  config = ml_collections.ConfigDict()
  config.task = "sinusoid" if sinusoid else "classification"
  config.method = name[len("sinusoid_"):] if sinusoid else name
  config.seed = 0
  config.data = "mnist1d:standard"   # the published MNIST-1D settings
  config.data_dir = ""
  config.train_classes = (0, 1, 2, 3, 4)
  config.test_classes = (5, 6, 7, 8, 9)
  # ",coil" / ",digits" (e.g. :protonet,coil): the same protocol on real
  # images of held-out classes.
  config.update(DATA_PRESETS[data_preset])
  # Class augmentation of the meta-training classes (every method, the
  # baseline's pretraining too): 4 = each image rotated by 90, 180, 270
  # degrees as a new class (Finn et al.'s Omniglot); 1 = none. Images only.
  config.train_rotations = 1
  config.n_way = 5
  config.k_shot = 1
  config.n_query = 15
  config.test_n_query = 15
  config.meta_batch_size = 4
  config.batch_size = 64        # the baseline's pretraining batch
  config.eval_episodes = 100    # validation during training
  config.test_episodes = 600

  config.model = models.model_config("mlp", features=(128, 128))
  # maml, anil, metasgd, reptile: start from a saved model's backbone (a
  # workdir, params dir or .safetensors / .npz weights), e.g. the baseline's
  # workdir: meta-training from a pretrained embedding (Chen et al. 2021,
  # "Meta-Baseline"). The head starts fresh.
  config.init_from = ""

  config.maml = ml_collections.ConfigDict()
  config.maml.inner_lr = 0.1
  config.maml.inner_steps = 5
  config.maml.test_inner_steps = 10
  config.maml.first_order = False
  config.maml.inner_rules = ()   # e.g. (("head/.*", 1.0), (".*", None))
  # The head each task's inner loop starts from (maml, anil, metasgd,
  # reptile): learned (Finn et al.), zero (Kao et al. 2022's zeroing trick)
  # or proto (Proto-MAML, Triantafillou et al. 2020: the support's class
  # means).
  config.maml.head_init = "learned"
  # Reptile only: the inner loop of meta-training also runs on the query
  # examples (Nichol et al.'s --train-shots; Reptile needs no held-out set).
  config.maml.train_on_query = False
  # Reptile only: the inner loop's optimizer, sgd or adam (Nichol et al.'s,
  # with first-moment decay inner_b1 = 0 and inner_lr 1e-3); the test-time
  # fine-tuning uses the same one at the same rate.
  config.maml.inner_optimizer = "sgd"
  config.maml.inner_b1 = 0.0
  if config.method == "anil":
    config.maml.inner_rules = (("head/.*", 1.0), (".*", None))
  if config.method == "metasgd":
    # The learned rates start at inner_lr and are tuned to inner_steps
    # steps; the test adapts with as many (test_inner_steps is unused).
    config.maml.inner_steps = 1

  config.hypernet = ml_collections.ConfigDict()
  config.hypernet.hidden = 64
  config.hypernet.embed_dim = 64

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "constant"

  if config.method == "reptile":
    # Reptile: the outer step is theta += epsilon (phi - theta); with SGD
    # at rate epsilon = 1 (linearly decayed to 0), as Nichol et al.
    config.maml.inner_steps = 8
    config.optim.name = "sgd"
    config.optim.learning_rate = 1.0
    config.optim.schedule = "linear"
  config.num_steps = (1000 if config.method in ("maml", "anil", "metasgd")
                      else 2000)
  config.eval_every = 500
  config.log_every = 250
  config.checkpoint_every = 500    # and at SIGTERM / Ctrl-C
  config.parallel = "auto"

  if sinusoid:
    config.model.mlp.features = (40, 40)   # the MAML paper's regressor
    config.k_shot = 10
    config.n_query = 10
    config.test_n_query = 100
    config.meta_batch_size = 25
    config.maml.inner_lr = 0.01
    config.maml.inner_steps = 8 if config.method == "reptile" else 1
    config.eval_inner_steps = (0, 1, 10)
    config.test_episodes = 600
    config.num_steps = 4000
    config.eval_every = 1000
    config.log_every = 1000
  if quick:
    # One device keeps the smoke run to seconds; the mesh and pmap paths
    # are exercised by the tests (test_metric_learning, and
    # test_experiments_meta with --config.parallel=mesh).
    config.parallel = "single"
    config.num_steps = 6
    config.eval_every = 3
    config.log_every = 3
    config.eval_episodes = 8       # = test_episodes: one compiled shape
    config.test_episodes = 8
    config.meta_batch_size = 4     # divisible by the tests' 4 CPU devices
    config.model.mlp.features = (16,)
    config.maml.inner_steps = 1
    config.maml.test_inner_steps = 2
    if sinusoid:
      config.eval_inner_steps = (0, 1, 2)
  return config
