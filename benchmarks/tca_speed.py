r"""TCA's linear kernel: fit + transform time at n = 2000 + 2000, d = 800.

  nice python benchmarks/tca_speed.py [--n=2000] [--d=800] \
      [--before_rev=e49c444] [--adapt_python=/path/to/venv/bin/python] \
      [--out=docs/results_domain_adaptation.md]

Standard-normal source, target shifted by 0.5 in every feature, no unit
scaling (the inputs whose float32 ``n x n`` solve came back NaN). Times, each
in a fresh process, ``TCA(n_components=30, kernel="linear")`` fit + transform
of both domains:

- ``after``: this tree's TCA (the exact ``min(n, d)`` solve);
- ``n x n``: this tree's float32 ``n x n`` dual on the same normalised
  problem (what the linear kernel cost before the reduction);
- ``before``: ``tljax/methods/tca.py`` at git revision ``--before_rev``
  (inputs scaled by 0.1, where it does not fail);
- ``adapt``: ADAPT's ``TCA(kernel="linear")`` when ``--adapt_python`` names a
  Python with the ``adapt`` package (it pulls in TensorFlow, so keep it out
  of tljax's environment: ``python -m venv /tmp/adaptenv &&
  /tmp/adaptenv/bin/pip install adapt``). ADAPT solves another problem
  (``(I + mu K L K)^-1 K H K`` handed to ``eigh`` although it is not
  symmetric), so its subspace is not compared; ours is compared with a
  float64 solve of the paper's.

Then the principal-angle cosines between ours and a float64 scipy solve of
the ``n x n`` problem, and writes a ``tca_speed`` section to ``--out``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import numpy as np  # noqa: E402

_DATA = r"""
import numpy as np
def data(n, d):
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(n, d)).astype(np.float32)
  xt = (rng.normal(size=(n, d)) + 0.5).astype(np.float32)
  return xs, xt
"""

_OURS = _DATA + r"""
import json, sys, time
sys.path.insert(0, sys.argv[4])
n, d, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
xs, xt = data(n, d)
if mode == "before":
  import tca_before as tca
  xs, xt = 0.1 * xs, 0.1 * xt
else:
  from tljax.methods import tca
import numpy as np, jax.numpy as jnp
out = {}
for rep in range(2):  # the first includes compilation
  t0 = time.time()
  if mode == "nxn":
    x = np.concatenate([xs, xt])
    x = x / np.sqrt(np.mean((x.astype(np.float64) ** 2).sum(1)))
    e = tca.mmd_factor(n, n).astype(np.float32)
    lam, w = tca._fit_dense(jnp.asarray(x, jnp.float32), e, None, 1.0,
                            kernel="linear", m=30)
    z = np.asarray((jnp.asarray(x) @ jnp.asarray(x).T) @ w)
  else:
    t = tca.TCA(n_components=30, kernel="linear").fit(xs, xt)
    z = np.concatenate([t.transform(xs), t.transform(xt)])
  out[f"seconds_{rep}"] = time.time() - t0
out["finite"] = bool(np.all(np.isfinite(z)))
if mode == "after":
  np.save(sys.argv[5], z)
print(json.dumps(out))
"""

_ADAPT = _DATA + r"""
import json, sys, time
import numpy as np
from adapt.feature_based import TCA
n, d = int(sys.argv[1]), int(sys.argv[2])
xs, xt = data(n, d)
t0 = time.time()
t = TCA(Xt=xt, n_components=30, mu=1.0, kernel="linear", verbose=0)
zs = t.fit_transform(xs, xt)
zt = t.transform(xt)
print(json.dumps({"seconds_0": time.time() - t0,
                  "finite": bool(np.all(np.isfinite(zt)))}))
"""


def _child(python, code, args, env=None):
  proc = subprocess.run([python, "-c", code] + [str(a) for a in args],
                        capture_output=True, text=True, cwd=ROOT,
                        check=False, env=env)
  if proc.returncode != 0:
    return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def reference_subspace(n, d, m):
  """Float64 scipy solve of the n x n problem (normalised K and M)."""
  import scipy.linalg  # pylint: disable=g-import-not-at-top
  ns = {}
  exec(_DATA, ns)  # pylint: disable=exec-used
  xs, xt = ns["data"](n, d)
  x = np.concatenate([xs, xt]).astype(np.float64)
  x /= np.sqrt(np.mean((x ** 2).sum(1)))
  k = x @ x.T
  e = np.r_[np.full(n, 1.0 / n), np.full(n, -1.0 / n)]
  ke = k @ e / np.linalg.norm(e)
  hk = k - k.mean(0, keepdims=True)
  _, w = scipy.linalg.eigh(hk.T @ hk, np.outer(ke, ke) + np.eye(2 * n),
                           subset_by_index=[2 * n - m, 2 * n - 1])
  return k @ w


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=2000, help="points per domain")
  ap.add_argument("--d", type=int, default=800)
  ap.add_argument("--before_rev", default="e49c444",
                  help="git revision whose tca.py is 'before' ('' skips)")
  ap.add_argument("--adapt_python", default="",
                  help="a Python with ADAPT installed ('' skips ADAPT)")
  ap.add_argument("--no_reference", action="store_true",
                  help="skip the float64 n x n check")
  ap.add_argument("--out", default=os.path.join(
      ROOT, "docs", "results_domain_adaptation.md"))
  args = ap.parse_args()
  tmp = tempfile.mkdtemp(prefix="tljax_tca_speed_")
  zpath = os.path.join(tmp, "z.npy")
  rows = {}
  rows["tljax after (min(n, d) solve)"] = _child(
      sys.executable, _OURS, [args.n, args.d, "after", tmp, zpath])
  rows["tljax n x n float32 dual (same problem)"] = _child(
      sys.executable, _OURS, [args.n, args.d, "nxn", tmp])
  if args.before_rev:
    src = subprocess.run(["git", "show",
                          f"{args.before_rev}:tljax/methods/tca.py"],
                         capture_output=True, text=True, cwd=ROOT,
                         check=False)
    if src.returncode == 0:
      with open(os.path.join(tmp, "tca_before.py"), "w") as f:
        f.write(src.stdout)
      rows[f"tljax before ({args.before_rev}, inputs x 0.1)"] = _child(
          sys.executable, _OURS, [args.n, args.d, "before", tmp])
    else:
      print(f"git show {args.before_rev} failed; skipping 'before'")
  if args.adapt_python:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    rows["ADAPT 0.4 TCA(kernel='linear', mu=1)"] = _child(
        args.adapt_python, _ADAPT, [args.n, args.d], env)
  for name, r in rows.items():
    print(f"{name}: {r}", flush=True)
  cos = None
  if not args.no_reference and os.path.exists(zpath):
    import scipy.linalg  # pylint: disable=g-import-not-at-top
    z_ref = reference_subspace(args.n, args.d, 30)
    cos = np.cos(scipy.linalg.subspace_angles(np.load(zpath), z_ref))
    print(f"principal-angle cosines vs float64 n x n: min {cos.min():.7f}")
  after = rows["tljax after (min(n, d) solve)"].get("seconds_1")
  command = "nice python benchmarks/tca_speed.py " + " ".join(sys.argv[1:])
  lines = ["## TCA: linear-kernel speed", "",
           "Produced by (on this 2-core CPU, shared with other jobs while it "
           "ran):", "", f"    {command.strip()}", "",
           f"n = {args.n} + {args.n} points, d = {args.d}, standard-normal "
           "source, target shifted by 0.5, 30 components, fit + transform "
           "of both domains, each in a fresh process (second run: "
           "compilation excluded; ADAPT once).", "",
           "| solver | first run (s) | second run (s) | finite | vs after |",
           "|---|---|---|---|---|"]
  for name, r in rows.items():
    if "error" in r:
      lines.append(f"| {name} | failed: {r['error']} | | | |")
      continue
    s0, s1 = r.get("seconds_0"), r.get("seconds_1")
    best = s1 if s1 is not None else s0
    ratio = f"{best / after:.0f}x" if after and best else ""
    lines.append(f"| {name} | {s0:.1f} | "
                 + (f"{s1:.1f}" if s1 is not None else "") +
                 f" | {r.get('finite')} | {ratio} |")
  if cos is not None:
    lines += ["", f"Subspace of `after` vs a float64 scipy solve of the "
              f"n x n problem: smallest principal-angle cosine "
              f"{cos.min():.7f} (30 components)."]
  if args.adapt_python:
    lines += ["", "ADAPT's TCA solves `(I + mu K L K)^-1 K H K` with `eigh` "
              "on that non-symmetric matrix, another problem, so its "
              "subspace is not compared."]
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out:
    from domain_adaptation import write_section  # pylint: disable=g-import-not-at-top
    write_section(args.out, "tca_speed", text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
