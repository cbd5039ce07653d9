"""ResNet in the torchvision layout: parameter counts equal torchvision's
published ones, names a regex can address, first-k layer rules."""

import jax
import numpy as np
import optax
import pytest

from tljax import models
from tljax import params as params_lib
from tljax.methods import finetune
from tljax.methods import supervised
from tljax.train import state as state_lib


@pytest.mark.parametrize("depth,count", [(18, 11_689_512),
                                         (50, 25_557_032)])
def test_parameter_counts_are_torchvisions(depth, count):
  """torchvision.models.resnet<depth>() with its 1000-class fc layer has
  exactly these many parameters (BatchNorm running statistics excluded)."""
  model = models.Classifier(models.resnet(depth), num_classes=1000)
  shapes = jax.eval_shape(lambda: models.init_variables(
      model, (224, 224, 3), 0))
  params, state = shapes
  assert params_lib.count_params(params) == count
  # Two running statistics (mean, var) per BatchNorm channel.
  bn_channels = sum(np.prod(v.shape) for k, v in zip(
      params_lib.leaf_names(params), jax.tree.leaves(params))
                    if "bn" in k and k.endswith("scale"))
  assert params_lib.count_params(state) == 2 * bn_channels


def test_names_and_shapes():
  net = models.resnet(50, width=2)
  # Shapes only: abstract evaluation compiles nothing.
  params, state = jax.eval_shape(lambda: models.init_variables(
      net, (32, 32, 3), 0))
  names = params_lib.leaf_names(params)
  assert "stem/conv/kernel" in names and "stem/bn/scale" in names
  assert "stage_4/block_2/conv3/kernel" in names
  assert "stage_2/block_0/downsample_conv/kernel" in names
  assert not any("bias" in n and "conv" in n for n in names)  # no conv bias
  assert net.layer_names == ("stem", "stage_1", "stage_2", "stage_3",
                             "stage_4")
  out = jax.eval_shape(lambda p, s, x: models.apply(net, p, x, model_state=s),
                       params, state,
                       jax.ShapeDtypeStruct((2, 32, 32, 3), np.float32))
  assert out.shape == (2, 8 * 2 * 4)
  with pytest.raises(ValueError, match="unknown ResNet depth"):
    models.resnet(20)


def test_first_k_layers_freeze_on_a_resnet():
  model = models.Classifier(models.ResNet(stage_sizes=(1, 1), width=4,
                                          small_inputs=True), num_classes=3)
  params, state = models.init_variables(model, (8, 8, 3), 0)
  keep = finetune.layer_patterns(model.backbone, 2, "first")
  assert keep == ("backbone/stem/.*", "backbone/stage_1/.*")
  tx = optax.sgd(0.5)
  from tljax import optim  # pylint: disable=g-import-not-at-top
  tx = optim.make_optimizer(params, name="sgd", learning_rate=0.5,
                            lr_rules=finetune.freeze_rules(keep))
  s = state_lib.create_train_state(params, tx, model_state=state)
  rng = np.random.default_rng(0)
  batch = {"x": rng.normal(size=(8, 8, 8, 3)).astype(np.float32),
           "y": rng.integers(0, 3, 8).astype(np.int32)}
  new, _ = jax.jit(supervised.make_step(model, tx))(s, batch,
                                                    jax.random.key(0))
  before = dict(zip(params_lib.leaf_names(params), jax.tree.leaves(params)))
  after = dict(zip(params_lib.leaf_names(new.params),
                   jax.tree.leaves(new.params)))
  for name in before:
    frozen = name.startswith(("backbone/stem/", "backbone/stage_1/"))
    assert np.array_equal(before[name], after[name]) == frozen, name
