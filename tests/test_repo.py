"""The README's two set-up commands and CI agree."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*p):
  with open(os.path.join(ROOT, *p)) as f:
    return f.read()


def test_readme_opens_with_two_commands_and_ci_runs_the_second():
  readme = _read("README.md")
  block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
  commands = [l for l in block.splitlines() if l and not l.startswith("#")]
  assert len(commands) == 2, commands
  assert "experiments/" in commands[0] and "pytest" in commands[1]
  ci = [l for l in _read(".ci", "run").splitlines()
        if l and not l.startswith(("#", "set ", "cd "))]
  assert ci == [commands[1]]
