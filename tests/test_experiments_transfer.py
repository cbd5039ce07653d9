"""Smoke tests of experiments/transfer_report.py (quick config, in process)."""

import json
import os
import sys

import numpy as np
import pytest

from tljax.drivers import transfer_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import transfer_report as report_config  # noqa: E402


def _quick(**overrides):
  config = report_config.get_config("quick")
  config.update(overrides)
  return config


def test_quick_run_writes_table_json_and_plot(tmp_path, capsys):
  workdir = str(tmp_path / "report")
  metrics = transfer_report.train_and_evaluate(_quick(), workdir)
  out = capsys.readouterr().out
  assert "| strategy | 1 | all |" in out and "best" in out
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  m = results["metrics"]
  assert m == json.loads(json.dumps(metrics))
  assert results["config"]["num_seeds"] == 2
  strategies = list(transfer_report.DEFAULT_STRATEGIES) + ["source_only"]
  assert sorted(m["accuracy"]) == sorted(strategies)
  for budget in ("1", "all"):
    means = {}
    for name in strategies:
      r = m["accuracy"][name][budget]
      runs = r["runs"]
      assert len(runs) == (1 if name == "source_only" else 2)
      assert all(0.0 <= a <= 1.0 for a in runs)
      np.testing.assert_allclose(r["mean"], np.mean(runs))
      np.testing.assert_allclose(r["std"], np.std(runs))
      means[name] = r["mean"]
    assert m["best_strategy"][budget] == max(means, key=means.get)
  with open(os.path.join(workdir, "table.md")) as f:
    table = f.read()
  assert all(f"| {name} |" in table for name in strategies)
  with open(os.path.join(workdir, "accuracy_vs_labels.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(os.path.join(workdir, "features"))
  # A second run with the source model of the first (init_from) and the
  # source head as the probe's starting point.
  again = transfer_report.train_and_evaluate(
      _quick(init_from=os.path.join(workdir, "source"),
             strategies=("linear_probe",), budgets=(3,),
             head_from_source=True),
      str(tmp_path / "again"))
  assert set(again["accuracy"]) == {"linear_probe", "source_only"}
  assert "training the source model" not in capsys.readouterr().out


def test_bad_configs_fail_before_training(tmp_path):
  with pytest.raises(ValueError, match="unknown strategies"):
    transfer_report.train_and_evaluate(_quick(strategies=("finetune", "lora")),
                                       str(tmp_path / "a"))
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "src.npz", x=rng.normal(size=(30, 5)),
           y=rng.integers(0, 3, 30))
  np.savez(tmp_path / "tgt.npz", x=rng.normal(size=(30, 6)),
           y=rng.integers(0, 3, 30))
  np.savez(tmp_path / "tgt2.npz", x=rng.normal(size=(30, 5)),
           y=rng.integers(0, 2, 30))
  with pytest.raises(ValueError, match="shape"):
    transfer_report.train_and_evaluate(
        _quick(source=f"npz:{tmp_path}/src.npz",
               target=f"npz:{tmp_path}/tgt.npz"), str(tmp_path / "b"))
  with pytest.raises(ValueError, match="same classes"):
    transfer_report.train_and_evaluate(
        _quick(source=f"npz:{tmp_path}/src.npz",
               target=f"npz:{tmp_path}/tgt2.npz", head_from_source=True),
        str(tmp_path / "c"))
  assert not os.path.exists(tmp_path / "b" / "source")


def _candidates(**overrides):
  config = report_config.get_config("candidates,quick")
  config.update(candidates=("data:mnist1d:clean", "random"))
  config.update(overrides)
  return config


def test_candidates_are_scored_fine_tuned_and_ranked(tmp_path, capsys):
  from tljax.methods import transferability
  workdir = str(tmp_path / "cands")
  metrics = transfer_report.train_and_evaluate(_candidates(), workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  m = results["metrics"]["candidates"]
  specs = ["data:mnist1d:clean", "random"]
  assert m["specs"] == m["finetuned"] == specs
  assert results["config"]["candidates"] == specs
  for s in specs:
    for budget in ("5", "all"):
      cell = m["scores"][s][budget]
      assert sorted(cell) == sorted(transferability.SCORES)
      for sc in transferability.SCORES:
        assert len(cell[sc]["runs"]) == 2
        assert all(np.isfinite(cell[sc]["runs"]))
      assert cell["leep"]["mean"] <= 0 and cell["nce"]["mean"] <= 1e-9
      assert -1e-9 <= cell["h_score"]["mean"] <= 9 + 1e-6
      acc = m["accuracy"][s][budget]
      assert 0 <= acc["mean"] <= 1 and len(acc["runs"]) == 2
      strategy = m["strategy"][s][budget]
      assert acc == m["sweep"][s][strategy][budget]
      assert acc["mean"] == max(r[budget]["mean"]
                                for r in m["sweep"][s].values())
  for budget in ("5", "all"):
    accs = [m["accuracy"][s][budget]["mean"] for s in specs]
    assert m["best_candidate"][budget] == specs[int(np.argmax(accs))]
    for sc in transferability.SCORES:
      r = m["ranking"][budget][sc]
      assert r["kendall_tau"] is None or -1 <= r["kendall_tau"] <= 1
      assert isinstance(r["top1_hit"], bool)
      assert r["picked"] in specs + [None]
  assert set(metrics["candidates"]["ranking"]) == {"5", "all"}
  assert m["source_accuracy_on_source"]["data:mnist1d:clean"] >= 0
  with open(os.path.join(workdir, "table.md")) as f:
    table = f.read()
  assert "| candidate | LEEP | LogME | H-score | NCE | TransRate |" in table
  assert "| score | 5: tau | 5: top-1 | all: tau | all: top-1 |" in table
  with open(os.path.join(workdir, "transferability.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.isdir(os.path.join(workdir, "candidates", "0", "params"))
  # The pretrained candidate again, as a checkpoint: same parameters, same
  # labelled subsets, so the same scores; nothing is trained before tuning.
  capsys.readouterr()
  again = transfer_report.train_and_evaluate(
      _candidates(candidates=(f"ckpt:{workdir}/candidates/0", "random"),
                  strategies=("linear_probe",), budgets=(5,)),
      str(tmp_path / "again"))["candidates"]
  assert "training the source model" not in capsys.readouterr().out
  for s, t in ((f"ckpt:{workdir}/candidates/0", "data:mnist1d:clean"),
               ("random", "random")):
    for sc in transferability.SCORES:
      np.testing.assert_allclose(again["scores"][s]["5"][sc]["mean"],
                                 m["scores"][t]["5"][sc]["mean"], rtol=1e-6)


@pytest.mark.parametrize("overrides,match", [
    ({"candidates": ("data:mnist1d:clean", "imagenet")}, "none of the forms"),
    ({"candidates": ("data:mnist1d:clean", "data:")}, "none of the forms"),
    ({"candidates": ("random",)}, "at least two"),
    ({"candidates": ("random", "random")}, "more than once"),
    ({"candidates": ("data:mnist1d:clean", "data:digits")}, "shape"),
    ({"num_finetune": 1}, "num_finetune"),
    ({"select_by": "accuracy"}, "select_by"),
    ({"candidate_accuracy": "lwf"}, "candidate_accuracy"),
    ({"strategies": ("scratch",)}, "scratch does not read it"),
])
def test_bad_candidates_fail_before_training(tmp_path, overrides, match):
  workdir = tmp_path / "bad"
  with pytest.raises(ValueError, match=match):
    transfer_report.train_and_evaluate(_candidates(**overrides), str(workdir))
  assert not os.path.exists(workdir / "candidates")


def test_candidate_checkpoint_of_another_input_shape_fails(tmp_path):
  from tljax import models
  from tljax.train import checkpoint
  model = models.build_classifier(_candidates().model, 10, (8, 8, 1))
  checkpoint.save_params(str(tmp_path / "digits"),
                         models.init_params(model, (8, 8, 1), 0))
  with pytest.raises(ValueError, match="do not fit"):
    transfer_report.train_and_evaluate(
        _candidates(candidates=(f"ckpt:{tmp_path}/digits", "random")),
        str(tmp_path / "w"))
  with pytest.raises(FileNotFoundError):
    transfer_report.train_and_evaluate(
        _candidates(candidates=(f"ckpt:{tmp_path}/nowhere", "random")),
        str(tmp_path / "w"))


def test_candidate_weights_file_is_scored_on_its_own_features(tmp_path):
  """A torchvision-layout ResNet saved as .safetensors is a candidate: its
  scores are those of the torch model's own features and probabilities on
  the labelled target examples; a file that is no classifier, or no file,
  is one error naming the candidate."""
  import safetensors.numpy
  import safetensors.torch
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  import torch_reference as ref  # pylint: disable=g-import-not-at-top
  from tljax import data
  from tljax.methods import transferability
  # Ten classes, as the target: the same classifier as "random" (compiled
  # once for both).
  net = ref.torch_resnet(18, 10, width=4, in_chans=1, seed=3)
  path = str(tmp_path / "r18.safetensors")
  safetensors.torch.save_file(net.state_dict(), path)
  config = _candidates(candidates=(f"ckpt:{path}", "random"),
                       target="digits", strategies=("linear_probe",),
                       budgets=(5,), num_seeds=1)
  config.model.name = "resnet18"
  config.model.resnet.width = 4
  m = transfer_report.train_and_evaluate(config, str(tmp_path / "w"))
  m = m["candidates"]
  labelled = data.load("digits", seed=config.seed, labels_per_class=5)
  logits, feats = ref.outputs(net, labelled.x)
  want = transferability.scores(feats, transfer_report._softmax(logits),
                                labelled.y)
  got = m["scores"][f"ckpt:{path}"]["5"]
  for sc in transferability.SCORES:
    np.testing.assert_allclose(got[sc]["mean"], want[sc], rtol=1e-3,
                               atol=1e-4, err_msg=sc)
  assert set(m["accuracy"]) == {f"ckpt:{path}", "random"}
  # Not a classifier: no fc in the file; no weights layout at all.
  sd = {k: v for k, v in safetensors.numpy.load_file(path).items()
        if not k.startswith("fc.")}
  headless = str(tmp_path / "headless.safetensors")
  safetensors.numpy.save_file(sd, headless)
  other = str(tmp_path / "bert.safetensors")
  safetensors.numpy.save_file({"embeddings.weight": np.zeros((3, 4),
                                                             np.float32)},
                              other)
  # (Read before anything else is built: checked on the candidate list
  # alone; the binary's exit status 2 for them is in test_cli.py.)
  target = data.load("digits")
  for bad, error, match in ((headless, ValueError, "holds no classifier"),
                            (other, ValueError, "holds neither"),
                            (str(tmp_path / "nowhere"), FileNotFoundError,
                             "nothing at")):
    config.candidates = (f"ckpt:{bad}", "random")
    with pytest.raises(error, match=f"candidate 'ckpt:{bad}': .*{match}"):
      transfer_report._parse_candidates(config, target)
