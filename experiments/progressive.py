r"""Progressive networks: a source column, then a new column on the target.

  python experiments/progressive.py --workdir=/tmp/tljax/progressive \
      [--config=experiments/configs/progressive.py]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.drivers import progressive  # noqa: E402
from tljax.drivers import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(progressive.train_and_evaluate, __file__)
