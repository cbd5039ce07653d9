r"""Few-shot meta-learning (ProtoNets, MAML, a model-based learner, a
pretrained-embedding baseline) and MAML on sinusoids; see the config.

  python experiments/meta.py --workdir=/tmp/tljax/meta \
      --config=experiments/configs/meta.py:protonet
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.methods import fewshot  # noqa: E402
from tljax.train import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "meta.py"),
    "Experiment configuration.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results go.",
                               required=True)


def main(argv):
  del argv
  cli.run_experiment(fewshot.train_and_evaluate, _CONFIG.value,
                     _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
