"""The step shape compiled three ways, the trainer's full and lean runs,
resume, NaN stops, strict results files."""

import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax import data as data_lib
from tljax import evaluation
from tljax import models
from tljax import optim
from tljax import workdir as workdir_lib
from tljax.methods import supervised
from tljax.train import checkpoint
from tljax.train import parallel
from tljax.train import state as state_lib
from tljax.train import trainer as trainer_lib


def _setup(lr_rules=None, name="momentum"):
  model = models.Classifier(backbone=models.CNN1D(channels=(8, 8), dense=16),
                            num_classes=4)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16)))["params"]
  tx = optim.make_optimizer(params, name=name, learning_rate=0.05,
                            lr_rules=lr_rules)
  return model, state_lib.create_train_state(params, tx), supervised.make_step(
      model, tx)


def _data(n=64, seed=0):
  rng = np.random.default_rng(seed)
  return {"x": rng.normal(size=(n, 16)).astype(np.float32),
          "y": rng.integers(0, 4, n).astype(np.int32)}


def test_train_step_matches_manual_sgd():
  """One step against an independent computation of the SGD update."""
  model = models.Classifier(backbone=models.MLP(features=(4,)), num_classes=3)
  params = model.init(jax.random.key(0), jnp.zeros((1, 2)))["params"]
  tx = optax.sgd(0.5)
  state = state_lib.create_train_state(params, tx)
  batch = {"x": np.array([[1., 2.], [-1., 0.5]], np.float32),
           "y": np.array([0, 2])}
  step = functools.partial(state_lib.train_step, tx=tx, loss_fn=functools
                           .partial(supervised.classification_loss,
                                    model=model))
  new, metrics = jax.jit(step)(state, batch, jax.random.key(0))

  # Independent forward pass in numpy, gradient by central differences.
  def np_loss(flat):
    p = jax.tree.unflatten(jax.tree.structure(params), flat)
    h = np.maximum(batch["x"] @ p["backbone"]["layer_0"]["kernel"]
                   + p["backbone"]["layer_0"]["bias"], 0)
    z = h @ p["head"]["kernel"] + p["head"]["bias"]
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(2), batch["y"]].mean()

  flat = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
  np.testing.assert_allclose(metrics["loss"], np_loss(flat), rtol=1e-5)
  for i, leaf in enumerate(flat):
    g = np.zeros_like(leaf)
    for j in np.ndindex(leaf.shape):
      e = [x.copy() for x in flat]
      e[i][j] += 1e-4
      up = np_loss(e)
      e[i][j] -= 2e-4
      g[j] = (up - np_loss(e)) / 2e-4
    np.testing.assert_allclose(jax.tree.leaves(new.params)[i],
                               leaf - 0.5 * g, atol=2e-4)
  assert int(new.step) == 1
  for k in ("l2_grads", "l2_params", "l2_updates", "accuracy"):
    assert k in metrics


def test_single_mesh_pmap_agree():
  """Same global batch -> same parameters on 1 device, mesh of 4, pmap 4."""
  assert jax.device_count() == 4, "tests/conftest.py sets 4 CPU devices"
  _, state0, step = _setup(lr_rules=[("backbone/layer_0/.*", None),
                                     (".*", 1.0)])
  data = _data()
  results = {}
  for mode in ("single", "mesh", "pmap"):
    c = parallel.compile_step(step, mode, donate=False)
    assert c.mode == mode
    s = c.put_state(state0)
    it = data_lib.batches(data, 16, seed=3)
    for _ in range(4):
      s, m = c(s, c.put_batch(next(it)), jax.random.key(0))
    results[mode] = (c.get_state(s).params, c.metrics(m)["loss"])
  for mode in ("mesh", "pmap"):
    chex.assert_trees_all_close(results[mode][0], results["single"][0],
                                atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(results[mode][1], results["single"][1],
                               rtol=1e-5)
  assert parallel.compile_step(step).mode == "mesh"  # default on 4 devices


def test_indivisible_batch_is_a_clear_error():
  _, state0, step = _setup()
  c = parallel.compile_step(step, "pmap")
  with pytest.raises(ValueError, match="not divisible by its 4 devices"):
    c.put_batch(_data(n=10))


def test_step_compiles_once():
  _, state0, step = _setup()

  @chex.assert_max_traces(n=1)
  def counted(state, batch, rng):
    return step(state, batch, rng)

  jitted = jax.jit(counted)
  s = state0
  for b in [_data(16, i) for i in range(3)]:
    s, _ = jitted(s, b, jax.random.key(0))


def _fit(workdir, num_steps, steps_per_call=1, **kw):
  _, state0, step = _setup()
  data = _data()
  return trainer_lib.Trainer(step, parallel="single",
                             steps_per_call=steps_per_call).fit(
      state0, lambda start: data_lib.batches(data, 16, seed=1,
                                             start_step=start),
      num_steps=num_steps, rng=jax.random.key(0), workdir=workdir,
      log_every=2, **kw)


def test_resume_is_exact(tmp_path):
  full, _ = _fit(str(tmp_path / "a"), 8)
  _fit(str(tmp_path / "b"), 4)
  resumed, _ = _fit(str(tmp_path / "b"), 8)  # picks up the step-4 checkpoint
  chex.assert_trees_all_equal(resumed.params, full.params)
  chex.assert_trees_all_equal(resumed.opt_state, full.opt_state)
  assert int(resumed.step) == 8
  lines = [json.loads(x) for x in
           (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
  assert [x["step"] for x in lines if x["split"] == "train"] == [2, 4, 6, 8]


def test_fit_eval_and_checkpoints(tmp_path):
  model, state0, step = _setup()
  data = _data()
  ds = data_lib.Dataset(data["x"], data["y"], 4, "toy")
  evals = []

  def eval_fn(state):
    evals.append(1)
    return evaluation.evaluate(model, state.params, ds)

  _, last = trainer_lib.Trainer(step).fit(
      state0, lambda s: data_lib.batches(data, 16, start_step=s),
      num_steps=6, rng=jax.random.key(0), workdir=str(tmp_path),
      eval_fn=eval_fn, eval_every=3, checkpoint_every=3, log_every=3)
  assert len(evals) == 2 and "eval_accuracy" in last
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]


def test_nan_stops_with_the_step(tmp_path):
  _, state0, step = _setup()
  data = _data()

  def batches(start):
    for i, b in enumerate(data_lib.batches(data, 16, start_step=start)):
      if start + i == 4:  # the 5th step sees a NaN input
        b = dict(b, x=np.full_like(b["x"], np.nan))
      yield b

  with pytest.raises(trainer_lib.TrainingDiverged,
                     match="at step 5.*No checkpoint had been saved"):
    trainer_lib.Trainer(step, parallel="single").fit(
        state0, batches, num_steps=8, rng=jax.random.key(0), log_every=3)
  with pytest.raises(trainer_lib.TrainingDiverged,
                     match="at step 5.*The last checkpoint, at step 4, is in"):
    trainer_lib.Trainer(step, parallel="single").fit(
        state0, batches, num_steps=8, rng=jax.random.key(0), log_every=3,
        workdir=str(tmp_path), checkpoint_every=2)


def test_steps_per_call_runs_the_same_steps_and_records(tmp_path):
  one, last1 = _fit(str(tmp_path / "one"), 7, checkpoint_every=5)
  many, last3 = _fit(str(tmp_path / "three"), 7, steps_per_call=3,
                     checkpoint_every=5)
  chex.assert_trees_all_close(many.params, one.params, atol=1e-5)
  assert int(many.step) == 7
  np.testing.assert_allclose(last3["loss"], last1["loss"], rtol=1e-5)
  for d in ("one", "three"):
    assert sorted(os.listdir(tmp_path / d / "checkpoints")) == ["5", "7"]
    rows = workdir_lib.read_jsonl(str(tmp_path / d / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [2, 4, 6, 7]
  # resuming from the step-5 checkpoint with 3 steps per call
  (tmp_path / "three" / "checkpoints" / "7").rename(tmp_path / "gone")
  resumed, _ = _fit(str(tmp_path / "three"), 7, steps_per_call=3)
  chex.assert_trees_all_close(resumed.params, one.params, atol=1e-5)
  _, state0, step = _setup()
  data = _data()

  def batches(start):
    for i, b in enumerate(data_lib.batches(data, 16, start_step=start)):
      yield dict(b, x=np.full_like(b["x"], np.nan)) if start + i == 4 else b

  with pytest.raises(trainer_lib.TrainingDiverged, match="at step 5"):
    trainer_lib.Trainer(step, parallel="single", steps_per_call=4).fit(
        state0, batches, num_steps=8, rng=jax.random.key(0), log_every=8)
  with pytest.raises(ValueError, match="steps_per_call must be >= 1"):
    trainer_lib.Trainer(step, steps_per_call=0)


def test_params_roundtrip(tmp_path):
  p = {"backbone": {"w": np.arange(3, dtype=np.float32)},
       "head": {"b": np.ones(2, np.float32)}}
  checkpoint.save_params(str(tmp_path / "params"), p)
  chex.assert_trees_all_equal(checkpoint.load_params(str(tmp_path)), p)
  with pytest.raises(FileNotFoundError, match="no parameters"):
    checkpoint.load_params(str(tmp_path / "nowhere"))


def test_write_results_is_strict_json(tmp_path):
  path = workdir_lib.write_results(
      str(tmp_path), {"acc": np.float32(0.5), "loss": float("nan"),
                      "runs": [1.0, np.inf]}, {"lr": 0.1})
  with open(path) as f:
    text = f.read()
  out = json.loads(text, parse_constant=lambda c: pytest.fail(
      f"{c} is not JSON"))
  assert out["metrics"] == {"acc": 0.5, "loss": None, "runs": [1.0, None]}
  assert out["config"] == {"lr": 0.1}
  assert out["non_finite"]["fields"] == ["metrics/loss", "metrics/runs/1"]


def test_put_state_copies_so_donation_spares_the_callers_arrays():
  """The compiled programs donate the state; the caller's params live on."""
  _, state0, step = _setup()
  params = jax.device_put(state0.params)
  trainer = trainer_lib.Trainer(step, parallel="single")
  state = state0.replace(params=params)
  trainer.run(state, _data(), batch_size=16, num_steps=2, seed=0,
              rng=jax.random.key(0))
  assert all(not x.is_deleted() for x in jax.tree.leaves(params))


@pytest.mark.parametrize("scan", [False, True])
def test_lean_run_matches_a_loop_of_steps_and_compiles_once(scan):
  """The lean run against an independent loop of the jitted step over
  data.batches, and no recompilation for another data set or seed."""
  _, state0, step = _setup()
  data = _data()
  trainer = trainer_lib.Trainer(step, parallel="single", scan=scan)
  got, metrics = trainer.run(state0, data, batch_size=16, num_steps=5, seed=3,
                             rng=jax.random.key(0))
  ref, jstep = state0, jax.jit(step)
  it = data_lib.batches(data, 16, seed=3)
  for _ in range(5):
    ref, ref_m = jstep(ref, next(it), jax.random.key(0))
  chex.assert_trees_all_close(got.params, ref.params, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], ref_m["loss"], rtol=1e-5)
  trainer.run(state0, _data(seed=1), batch_size=16, num_steps=5, seed=4,
              rng=jax.random.key(1))
  assert trainer.num_compiles == 1


def test_stacked_batch_indices_are_the_per_step_ones():
  """Each epoch's permutation drawn once gives exactly the per-step
  indices, across epoch boundaries (n smaller than a batch too), from any
  start step, on each of several processes."""
  for n, bs, steps, start in ((10, 16, 9, 0), (64, 16, 13, 3), (7, 4, 5, 11)):
    for pc in (1, 2):
      for pi in range(pc):
        got = data_lib.batching.stacked_batch_indices(
            n, bs, steps, seed=5, start_step=start, process_index=pi,
            process_count=pc)
        want = np.stack([data_lib.batching.local_batch_indices(
            n, bs, start + s, 5, process_index=pi, process_count=pc)
                         for s in range(steps)])
        np.testing.assert_array_equal(got, want)
        assert not got.flags.writeable  # cached: nobody may change it


def test_norms_are_cheap_and_optional():
  """tree_l2_norm against a float64 norm of every leaf (small leaves
  concatenated, a large one reduced alone, bf16 promoted); a step without
  norms gives the same state and the same other metrics."""
  rng = np.random.default_rng(0)
  tree = {"big": rng.normal(size=(300, 300)).astype(np.float32),
          "b": rng.normal(size=(7,)).astype(np.float32),
          "k": {"w": rng.normal(size=(5, 3)).astype(np.float32),
                "h": jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16)}}
  want = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2)
                     for x in jax.tree.leaves(tree)))
  got = jax.jit(state_lib.tree_l2_norm)(tree)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  assert float(state_lib.tree_l2_norm({})) == 0.0
  _, state0, step = _setup()
  batch = jax.tree.map(jnp.asarray, {k: v[:16] for k, v in _data().items()})
  full_state, full = jax.jit(step)(state0, batch, jax.random.key(0))
  lean_state, lean = jax.jit(functools.partial(step, norms=False))(
      state0, batch, jax.random.key(0))
  chex.assert_trees_all_equal(lean_state.params, full_state.params)
  assert set(full) - set(lean) == {"l2_grads", "l2_params", "l2_updates"}
  for k in lean:
    np.testing.assert_array_equal(lean[k], full[k])
  np.testing.assert_allclose(full["l2_params"],
                             optax.tree.norm(full_state.params), rtol=1e-6)


@pytest.mark.parametrize("scan", [False, True])
def test_lean_run_is_the_same_on_one_device_a_mesh_and_pmap(scan):
  """A sweep's numbers do not depend on the parallel mode (4 CPU devices)."""
  _, state0, step = _setup(lr_rules=[("backbone/layer_0/.*", None),
                                     (".*", 1.0)])
  data = _data()
  out = {}
  for mode in ("single", "mesh", "pmap"):
    trainer = trainer_lib.Trainer(step, parallel=mode, scan=scan)
    assert trainer.mode == mode
    s, m = trainer.run(state0, data, batch_size=16, num_steps=4, seed=2,
                       rng=jax.random.key(0))
    out[mode] = (jax.device_get(s.params), m["loss"])
  for mode in ("mesh", "pmap"):
    chex.assert_trees_all_close(out[mode][0], out["single"][0], atol=1e-5,
                                rtol=1e-5)
    np.testing.assert_allclose(out[mode][1], out["single"][1], rtol=1e-5)


@pytest.mark.parametrize("scan", [False, True])
def test_lean_run_nan_names_the_step(scan):
  _, state0, step = _setup()
  bad = _data()
  bad["x"][5] = np.nan
  with pytest.raises(trainer_lib.TrainingDiverged, match="diverged at step"):
    trainer_lib.Trainer(step, parallel="single", scan=scan).run(
        state0, bad, batch_size=64, num_steps=3, seed=0,
        rng=jax.random.key(0))
  # Batches of 16: the first one holding the NaN example names its step.
  first = next(s for s in range(4) if 5 in data_lib.batching.batch_indices(
      64, 16, s, 0))
  with pytest.raises(trainer_lib.TrainingDiverged,
                     match=f"diverged at step {first + 1}:"):
    trainer_lib.Trainer(step, parallel="single", scan=scan).run(
        state0, bad, batch_size=16, num_steps=4, seed=0,
        rng=jax.random.key(0))
  with pytest.raises(ValueError, match="same length"):
    trainer_lib.stack_batches({"x": bad["x"], "y": bad["y"][:3]}, 4, 2,
                              seed=0)


def test_init_state_needs_the_optimizer():
  trainer = trainer_lib.Trainer(lambda s, b, r: (s, {}))
  with pytest.raises(ValueError, match="no optimizer"):
    trainer.train_from({"w": np.zeros(1)}, {"x": np.zeros((2, 1))},
                       batch_size=1, num_steps=1, seed=0,
                       rng=jax.random.key(0))


def test_resume_trims_records_past_the_checkpoint(tmp_path):
  """A run killed after logging step 6 but before checkpointing it resumes
  from step 4; metrics.jsonl then holds every step once."""
  wd = str(tmp_path)
  _fit(wd, 6, checkpoint_every=4)
  # What a kill between the step-6 record and its checkpoint leaves behind.
  ckpt_dir = tmp_path / "checkpoints"
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(ckpt_dir / "6")
  _fit(wd, 8, checkpoint_every=4)
  steps = [r["step"] for r in workdir_lib.read_jsonl(
      str(tmp_path / "metrics.jsonl")) if r["split"] == "train"]
  assert steps == [2, 4, 6, 8]


def test_a_finished_run_reports_its_last_train_metrics(tmp_path):
  _, first = _fit(str(tmp_path), 4)
  _, again = _fit(str(tmp_path), 4)  # nothing to train
  assert np.isfinite(again["loss"]) and again["loss"] == first["loss"]


def test_restoring_a_checkpoint_of_another_model_is_one_clear_error(tmp_path):
  _fit(str(tmp_path), 2)
  other = models.Classifier(models.MLP((3,)), num_classes=4)
  params = models.init_params(other, (16,), 0)
  tx = optim.make_optimizer(params)
  with pytest.raises(ValueError, match="does not fit this run's model"):
    trainer_lib.Trainer(supervised.make_step(other, tx), parallel="single").fit(
        state_lib.create_train_state(params, tx),
        lambda s: data_lib.batches(_data(), 16, start_step=s), num_steps=4,
        rng=jax.random.key(0), workdir=str(tmp_path))
