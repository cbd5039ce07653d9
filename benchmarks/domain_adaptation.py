r"""Domain adaptation accuracy: source-only, each method, target-supervised.

  nice python benchmarks/domain_adaptation.py [--seeds=0,1,2] \
      [--pairs=moons,mnist1d,digits] [--methods=...] [--steps=1000] \
      [--num_examples=100] [--set=bottleneck_dim=32,optim.name="sgd"] \
      [--out=docs/results_domain_adaptation.md] [--workdir=DIR]

Runs ``experiments/adapt.py``'s ``train_and_evaluate`` for every method on
three pairs (the presets of ``experiments/configs/adapt.py``):

- ``moons``: two moons -> two moons rotated by 30 degrees;
- ``mnist1d``: mnist1d ``clean`` -> ``noisy`` (the generator's noise scales);
- ``digits``: scikit-learn digits -> the same digits rotated by 30 degrees.

``source_only`` trains on labelled source data only; ``target_supervised``
trains on the labelled target training split (the ceiling). Every method is
evaluated on the target test split. Data are fixed by their specs; the seed
changes initialization, batch order and the TCA/KMM subsamples. Prints
mean +- std tables and writes them, with the command, to ``--out``. Every
run keeps its own workdir, ``<workdir>/<pair>/<method>/seed<k>`` (a new
temporary directory unless ``--workdir`` names one; runs found finished
there are not trained again), with the embedding plot of each method's
first seed.

  nice python benchmarks/domain_adaptation.py --tca_memory=1000,2000,4000

measures TCA's fit time and peak memory at each total n (half source, half
target, 20 features, rbf kernel), each in a fresh process.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import numpy as np  # noqa: E402

METHODS = ("source_only", "dann", "cdan", "cdan_e", "mmd", "coral", "mcc",
           "adda", "self_training", "kmm", "tca", "jda", "target_supervised")
PAIR_NAMES = {"moons": "moons -> moons:30", "mnist1d":
              "mnist1d:clean -> mnist1d:noisy",
              "digits": "digits:clean -> digits:rotated",
              "coil": "COIL1 -> COIL2", "coil21": "COIL2 -> COIL1"}


def _settings(text: str):
  """``[(key, value), ...]`` from ``a.b=1,c="x"`` (JSON values; a bare
  word is a string)."""
  out = []
  # Commas inside [...] belong to a JSON list value.
  for item in filter(None, re.split(r",(?![^\[]*\])", text)):
    key, sep, raw = item.partition("=")
    if not sep:
      raise ValueError(f"--set entries are key=value, got {item!r}")
    try:
      value = json.loads(raw)
    except json.JSONDecodeError:
      value = raw
    out.append((key.strip(), value))
  return out


def _fmt(vals):
  vals = np.asarray(vals, np.float64) * 100
  return f"{vals.mean():.1f} ± {vals.std():.1f}"


def run_all(args):
  from configs import adapt as adapt_config  # pylint: disable=g-import-not-at-top
  from tljax.drivers import adapt  # pylint: disable=g-import-not-at-top
  seeds = [int(s) for s in args.seeds.split(",")]
  pairs = args.pairs.split(",")
  methods = args.methods.split(",")
  results = {}  # (pair, method) -> list of metric dicts
  t_all = time.time()
  for pair in pairs:
    for method in methods:
      for seed in seeds:
        config = adapt_config.get_config(pair)
        config.method = method
        config.seed = seed
        config.parallel = "single"
        config.plot = seed == seeds[0]
        config.checkpoint_every = 0
        if args.steps > 0:
          config.num_steps = args.steps
          config.adda.pretrain_steps = args.steps
        if args.num_examples > 0:
          config.num_examples = args.num_examples
        for key, value in _settings(args.set):
          node = config
          for part in key.split(".")[:-1]:
            node = node[part]
          node[key.split(".")[-1]] = value
        config.eval_every = config.num_steps
        config.log_every = config.num_steps
        wd = os.path.join(args.workdir, pair, method, f"seed{seed}")
        t0 = time.time()
        m = dict(adapt.train_and_evaluate(config, wd))
        m.setdefault("wall_seconds", time.time() - t0)
        results.setdefault((pair, method), []).append(m)
        print(f"{pair:8s} {method:18s} seed {seed}  target_accuracy "
              f"{m['target_accuracy']:.3f}  ({time.time() - t0:.1f}s)",
              flush=True)
  total = time.time() - t_all
  return results, seeds, pairs, methods, total


def tables(results, seeds, pairs, methods, total, command):
  lines = [
      "# Domain adaptation results", "",
      "Produced by (on this 2-core CPU, "
      f"{total / 60:.1f} min in all):", "", f"    {command}", "",
      f"Target test accuracy (%), mean ± std over seeds {seeds}. Data are "
      "fixed by their specs; the seed changes initialization, batch order and "
      "the TCA/KMM subsamples. `tca` is 1-NN on the TCA embedding (fitted on "
      "1000 source + 1000 target examples, linear kernel, 30 components); its "
      "fair baseline is the `raw 1-NN` row (the same 1000 source examples, no "
      "adaptation). Settings: `experiments/configs/adapt.py`.", ""]
  head = "| method | " + " | ".join(PAIR_NAMES.get(p, p) for p in pairs) + \
      " |"
  lines += [head, "|---" * (len(pairs) + 1) + "|"]
  rows = list(methods)
  for method in rows:
    cells = []
    for pair in pairs:
      rs = results.get((pair, method))
      cells.append(_fmt([r["target_accuracy"] for r in rs]) if rs else "")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  if "tca" in methods:
    for key, name in (("raw_target_accuracy_1nn", "raw 1-NN (TCA baseline)"),
                      ("target_accuracy_logreg", "tca + logistic regression"),
                      ("raw_target_accuracy_logreg",
                       "raw logistic regression")):
      cells = [_fmt([r[key] for r in results[(p, "tca")]])
               if (p, "tca") in results else "" for p in pairs]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "Wall time per run (s, mean over seeds; training, "
            "evaluation and start-up):", "", head,
            "|---" * (len(pairs) + 1) + "|"]
  for method in methods:
    cells = []
    for pair in pairs:
      rs = results.get((pair, method))
      cells.append(f"{np.mean([r['wall_seconds'] for r in rs]):.0f}"
                   if rs else "")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  lines += ["", "Linear-probe domain accuracy on the learned features (%; a "
            "logistic regression telling source from target test features, "
            "held out; 50 = indistinguishable):", "", head,
            "|---" * (len(pairs) + 1) + "|"]
  for method in methods:
    if method in ("tca", "jda"):
      continue
    cells = []
    for pair in pairs:
      rs = results.get((pair, method))
      cells.append(_fmt([r["feature_domain_accuracy"] for r in rs])
                   if rs else "")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  if "dann" in methods:
    cells = []
    for pair in pairs:
      rs = results.get((pair, "dann"))
      cells.append(_fmt([r["domain_accuracy"] for r in rs]) if rs else "")
    lines += ["", "DANN's own domain classifier, balanced accuracy on the "
              "last training batch (%):", "", head,
              "|---" * (len(pairs) + 1) + "|",
              "| dann | " + " | ".join(cells) + " |"]
  # Honest verdicts, computed from the numbers above.
  lines += ["", "Where a method does not clearly beat its baseline "
            "(source-only; raw-input 1-NN for TCA): its mean is not above "
            "the baseline's, or above by less than the larger of the two "
            "standard deviations:", ""]
  verdicts = []
  for pair in pairs:
    if (pair, "source_only") not in results:
      continue
    base = [r["target_accuracy"] for r in results[(pair, "source_only")]]
    for method in methods:
      if method in ("source_only", "target_supervised") or (
          pair, method) not in results:
        continue
      rs = results[(pair, method)]
      acc = [r["target_accuracy"] for r in rs]
      ref, ref_name = base, "source-only"
      if method in ("tca", "jda"):
        ref = [r["raw_target_accuracy_1nn"] for r in rs]
        ref_name = "raw 1-NN"
      gain = np.mean(acc) - np.mean(ref)
      if gain <= 0:
        verdict = "does not beat"
      elif gain < max(np.std(acc), np.std(ref)):
        verdict = "no clear gain over"
      else:
        continue
      verdicts.append(f"- {PAIR_NAMES.get(pair, pair)}: **{method}** "
                      f"{verdict} {ref_name}: {_fmt(acc)} vs {_fmt(ref)}")
  lines += verdicts or ["- none"]
  return "\n".join(lines) + "\n"


def write_section(path: str, name: str, text: str):
  """Replaces (or appends) the ``name`` section of the results file, so the
  accuracy tables and the TCA measurements can be rerun separately."""
  begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
  block = f"{begin}\n{text.rstrip()}\n{end}\n"
  old = ""
  if os.path.exists(path):
    with open(path) as f:
      old = f.read()
  if begin in old and end in old:
    new = old[:old.index(begin)] + block + old[old.index(end) + len(end) + 1:]
  else:
    new = (old.rstrip() + "\n\n" if old.strip() else "") + block
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write(new)


# ---------------------------------------------------------------- TCA memory
_CHILD = r"""
import json, resource, sys, time
import numpy as np
from tljax.methods import tca
n = int(sys.argv[1])
rng = np.random.default_rng(0)
xs = rng.normal(size=(n // 2, 20)).astype(np.float32)
xt = (rng.normal(size=(n - n // 2, 20)) + 0.5).astype(np.float32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.time()
t = tca.TCA(n_components=30, kernel="rbf").fit(xs, xt)
z = t.transform(xt)
dt = time.time() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "seconds": dt, "base_mb": base / 1024,
                  "peak_mb": peak / 1024, "fit_mb": (peak - base) / 1024}))
"""


def tca_memory(ns, timeout):
  out = []
  for n in ns:
    t0 = time.time()
    try:
      proc = subprocess.run([sys.executable, "-c", _CHILD, str(n)],
                            capture_output=True, text=True, timeout=timeout,
                            cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
      print(f"n={n}: did not finish within {timeout}s", flush=True)
      out.append({"n": n, "timeout": timeout})
      break
    if proc.returncode != 0:
      print(f"n={n}: failed ({proc.stderr.strip().splitlines()[-1:]})",
            flush=True)
      out.append({"n": n, "error": proc.stderr.strip().splitlines()[-1:]})
      break
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["bytes_per_n2"] = rec["fit_mb"] * 2**20 / n**2
    out.append(rec)
    print(f"n={n}: fit+transform {rec['seconds']:.1f}s, peak RSS "
          f"{rec['peak_mb']:.0f} MB (+{rec['fit_mb']:.0f} MB for the fit, "
          f"{rec['bytes_per_n2']:.1f} bytes per n^2)  [{time.time() - t0:.0f}s"
          " with start-up]", flush=True)
  return out


def tca_memory_table(recs, command):
  lines = ["## TCA: memory and time", "", "Produced by (on this 2-core CPU, "
           "shared with other jobs while it ran):", "", f"    {command}", "",
           "Total n = n_s + n_t (half each), 20 features, rbf kernel, 30 "
           "components; fit + transform in a fresh process. `fit MB` is the "
           "peak resident memory above the process's baseline (JAX and the "
           "data loaded).", "",
           "| n | fit + transform (s) | peak RSS (MB) | fit MB | bytes per n^2 |",
           "|---|---|---|---|---|"]
  for r in recs:
    if "seconds" in r:
      lines.append(f"| {r['n']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | "
                   f"{r['fit_mb']:.0f} | {r['bytes_per_n2']:.1f} |")
    else:
      lines.append(f"| {r['n']} | did not finish: "
                   f"{r.get('timeout') or r.get('error')} | | | |")
  return "\n".join(lines) + "\n"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--seeds", default="0,1,2")
  ap.add_argument("--pairs", default="moons,mnist1d,digits")
  ap.add_argument("--methods", default=",".join(METHODS))
  ap.add_argument("--steps", type=int, default=0,
                  help="train steps (0: the config's per-pair default)")
  ap.add_argument("--num_examples", type=int, default=0,
                  help="train examples per domain (0: the config's)")
  ap.add_argument("--set", default="",
                  help="config overrides for every run, comma-separated "
                  "key=value with JSON values (bottleneck_dim=32)")
  ap.add_argument("--workdir", default="",
                  help="where each run keeps its workdir (default: a new "
                  "temporary directory)")
  ap.add_argument("--out", default=os.path.join(
      ROOT, "docs", "results_domain_adaptation.md"))
  ap.add_argument("--tca_memory", default="",
                  help="comma-separated total n to measure TCA at instead")
  ap.add_argument("--timeout", type=int, default=900,
                  help="per-n limit for --tca_memory (seconds)")
  args = ap.parse_args()
  command = "nice python benchmarks/domain_adaptation.py " + " ".join(
      sys.argv[1:])
  if args.tca_memory:
    recs = tca_memory([int(n) for n in args.tca_memory.split(",")],
                      args.timeout)
    text = tca_memory_table(recs, command.strip())
    print(text)
    if args.out:
      write_section(args.out, "tca_memory", text)
      print(f"wrote {args.out}")
    return
  args.workdir = args.workdir or tempfile.mkdtemp(prefix="tljax_da_")
  results, seeds, pairs, methods, total = run_all(args)
  text = tables(results, seeds, pairs, methods, total, command.strip())
  print(text)
  if args.out:
    write_section(args.out, "accuracy", text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
