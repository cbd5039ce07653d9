r"""Knowledge distillation (Hinton et al., 2015): a CNN teacher, an MLP student.

  python experiments/distill.py --workdir=/tmp/tljax/distill

Trains a CNN1D teacher on mnist1d (the supervised run, resumable, in
<workdir>/teacher), then a one-hidden-layer MLP student over 3 seeds from
the labels alone and with the teacher's soft targets (T=4, alpha=0.9), and
reports the three test accuracies. --config.init_from=<workdir of
experiments/train.py> reuses a trained teacher;
--config=experiments/configs/distill.py:quick is the smoke test.

Measured on the 2-core CPU (docs/results_finetune.md): teacher 97.9%;
student 78.7 ± 0.6% from labels, 74.0 ± 0.9% distilled (distillation does
not help here); 48 s wall with other jobs on the same cores.
"""

import ml_collections

from tljax import models


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  if arg not in ("", "quick"):
    raise ValueError(f"unknown config argument {arg!r}; use quick (a "
                     "seconds-long smoke run) or nothing")
  c = ml_collections.ConfigDict()
  c.data = "mnist1d:clean"
  c.data_dir = ""
  c.seed = 0
  c.init_from = ""                 # a trained teacher (params dir/workdir)

  c.teacher = ml_collections.ConfigDict()
  c.teacher.model = models.model_config("cnn1d")
  c.teacher.num_steps = 2000
  c.teacher.batch_size = 128
  c.teacher.eval_every = 0
  c.teacher.log_every = 500
  c.teacher.checkpoint_every = 500
  c.teacher.optim = ml_collections.ConfigDict()
  c.teacher.optim.name = "adam"
  c.teacher.optim.learning_rate = 1e-3
  c.teacher.optim.schedule = "cosine"
  c.teacher.optim.warmup_steps = 100
  c.teacher.optim.grad_clip_norm = 1.0
  c.teacher.optim.lr_rules = ()

  c.student = models.model_config("mlp", features=(64,))
  c.labels_per_class = 0           # student's labelled examples; 0: all
  c.temperature = 4.0
  c.alpha = 0.9                    # weight of the distillation term
  c.num_steps = 2000
  c.batch_size = 64
  c.optim = ml_collections.ConfigDict()  # the student's
  c.optim.name = "adam"
  c.optim.learning_rate = 1e-3
  c.num_seeds = 3
  c.parallel = "auto"              # auto | single | mesh | pmap

  if arg == "quick":               # seconds: tiny models, few steps
    c.teacher.update(num_steps=10, batch_size=16, eval_every=0, log_every=10,
                     checkpoint_every=0)
    c.teacher.optim.warmup_steps = 0
    c.teacher.model = models.model_config("mlp", features=(32,))
    c.student.mlp.features = (16,)
    c.update(num_steps=6, batch_size=16, num_seeds=2)
  return c
