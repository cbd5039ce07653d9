r"""Multitask learning (Caruana, 1997): source and target tasks on one trunk.

  python experiments/multitask.py --workdir=/tmp/tljax/multitask

A CNN1D trunk with two heads trains on the clean mnist1d domain (all labels)
and the noisy domain (5 labels per class) at once, each step one batch of
each, losses weighted 1:1; compared with the target task alone, over 3
seeds. --config=experiments/configs/multitask.py:quick is the smoke test.

Measured on the 2-core CPU (docs/results_finetune.md): target 24.1 ± 0.7%
jointly vs 18.1 ± 0.7% alone; source task 95.4%; 38 s wall with other
jobs on the same cores.
"""

import ml_collections

from tljax import models


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  if arg not in ("", "quick"):
    raise ValueError(f"unknown config argument {arg!r}; use quick (a "
                     "seconds-long smoke run) or nothing")
  c = ml_collections.ConfigDict()
  c.source = "mnist1d:clean"
  c.target = "mnist1d:noisy"
  c.data_dir = ""
  c.seed = 0
  c.model = models.model_config("auto")
  c.labels_per_class = 5           # target labels per class; 0: all
  c.source_weight = 1.0            # weight of the source task's loss
  c.num_steps = 1000
  c.batch_size = 64                # per task
  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"
  c.optim.learning_rate = 1e-3
  c.num_seeds = 3
  c.eval_examples = 0              # test examples per task (0: all)
  c.parallel = "auto"              # auto | single | mesh | pmap
  if arg == "quick":               # seconds: a small MLP, few steps
    c.model.name = "mlp"
    c.model.mlp.features = (16,)
    c.update(num_steps=6, batch_size=16, num_seeds=2, eval_examples=200)
  return c
