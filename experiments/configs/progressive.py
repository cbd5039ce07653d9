r"""Progressive neural networks (:mod:`tljax.methods.progressive`): a column
trained on the source domain, then a new column with lateral adapters on the
target with few labels, against fine-tuning and training from scratch.

  python experiments/progressive.py --workdir=/tmp/tljax/progressive

Measured on this 2-core CPU (2026-11-22, shared with other agents' jobs;
docs/results_other_methods.md has the tables): mnist1d:clean -> sheared,
5 seeds, target accuracy at 5 / 20 / 100 labels per class: progressive
31.6 / 53.2 / 81.5%, progressive with an untrained column 0 23.1 / 35.1 /
62.3%, finetune 35.0 / 59.8 / 86.2%, scratch 23.4 / 33.4 / 55.8%; the source
column unadapted 73.7%; column 0 bit-identical after training (source
accuracy 97.6% before and after); 81 s.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  args = [a for a in arg.split(",") if a]
  unknown = [a for a in args if a != "quick"]
  if unknown:
    raise ValueError(f"unknown config argument(s) {unknown}; use quick")
  config = ml_collections.ConfigDict()
  config.sources = ("mnist1d:clean",)  # one column per source, in order
  config.target = "mnist1d:sheared"
  config.budgets = (5, 20, 100)        # target labels per class
  config.strategies = ("progressive", "progressive_untrained", "finetune",
                       "scratch")
  config.num_seeds = 5
  config.data_dir = ""
  config.seed = 0
  config.plot = True

  config.column = ml_collections.ConfigDict()
  config.column.conv_channels = (32, 32, 32)  # 1-D convs (stride 2); () MLP
  config.column.features = (128,)
  config.column.kernel_size = 5
  config.column.adapter_dim = 32

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.grad_clip_norm = 1.0

  config.source_steps = 1500
  config.target_steps = 300
  config.batch_size = 64
  config.eval_every = 500
  config.log_every = 250
  config.checkpoint_every = 500    # and at SIGTERM / Ctrl-C
  config.parallel = "auto"

  if "quick" in args:
    config.column.conv_channels = ()
    config.column.features = (32,)
    config.column.adapter_dim = 8
    config.budgets = (2,)
    config.num_seeds = 2
    config.source_steps = 8
    config.target_steps = 4
    config.batch_size = 16
    config.eval_every = 4
    config.log_every = 4
  return config
