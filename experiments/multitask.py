r"""Source and target tasks trained jointly on one trunk; see the config.

  python experiments/multitask.py --workdir=/tmp/tljax/multitask \
      [--config.labels_per_class=20] [--config=experiments/configs/multitask.py:quick]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.drivers import multitask  # noqa: E402
from tljax.drivers import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(multitask.train_and_evaluate, __file__, default_workdir="/tmp/tljax/multitask")
