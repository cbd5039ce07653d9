r"""Few-shot meta-learning (ProtoNets, MAML, a model-based learner, a
pretrained-embedding baseline) and MAML on sinusoids; see the config.

  python experiments/meta.py --workdir=/tmp/tljax/meta \
      --config=experiments/configs/meta.py:protonet
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.drivers import meta  # noqa: E402
from tljax.drivers import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(meta.train_and_evaluate, __file__)
