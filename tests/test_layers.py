"""The layout: each layer imports only from below, and the method modules
load neither matplotlib nor orbax (a notebook imports them for the math)."""

import ast
import os
import pkgutil
import subprocess
import sys

import tljax
import tljax.methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "tljax")

# What each part of tljax may import from tljax (besides itself).
BELOW = {
    "workdir": set(),
    "ops": set(),
    "params": set(),
    "optim": {"params"},
    "data": set(),
    "models": {"ops"},
    "losses": {"ops", "params"},
    "evaluation": {"data"},
    "train": {"data", "workdir"},
    "viz": {"workdir"},
    "methods": {"data", "evaluation", "losses", "models", "ops", "optim",
                "params", "train"},
    "drivers": {"data", "evaluation", "losses", "models", "ops", "optim",
                "params", "train", "methods", "viz", "workdir"},
}


def _part(path):
  rel = os.path.relpath(path, PKG)
  return rel.split(os.sep)[0].removesuffix(".py")


def _tljax_imports(path):
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for n in names:
      if n.startswith("tljax."):
        yield n.split(".")[1], node.lineno


def test_each_layer_imports_only_from_below():
  bad = []
  for dirpath, _, files in os.walk(PKG):
    for f in files:
      if not f.endswith(".py") or f == "__init__.py" and dirpath == PKG:
        continue
      path = os.path.join(dirpath, f)
      part = _part(path)
      for imported, line in _tljax_imports(path):
        if imported != part and imported not in BELOW[part]:
          bad.append(f"{os.path.relpath(path, ROOT)}:{line} ({part}) "
                     f"imports tljax.{imported}")
  assert not bad, "\n".join(bad)


def test_method_modules_load_neither_matplotlib_nor_orbax():
  modules = [f"tljax.methods.{m.name}"
             for m in pkgutil.iter_modules(tljax.methods.__path__)]
  assert len(modules) >= 15, modules
  code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
          "heavy = sorted({k.split('.')[0] for k in sys.modules\n"
          "                if k.split('.')[0] in ('matplotlib', 'orbax')})\n"
          "print(heavy)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "[]", out.stdout
