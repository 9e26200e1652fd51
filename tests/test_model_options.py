"""The model registry checks its own options (``zoo.check_model_options``),
and the name lists are defined once, by their owners."""
import numpy as np
import pytest

from weightmirror.circuits.rules import make_rule
from weightmirror.errors import InputError
from weightmirror.models import layers, zoo
from weightmirror.models.zoo import MODEL_NAMES, ModelOptionError, build_model, check_model_options, model_options


def test_owned_name_lists():
    assert layers.ACTIVATION_NAMES == tuple(layers.ACTIVATIONS) == ("relu", "tanh", "sigmoid")
    assert MODEL_NAMES == ("mlp", "convnet", "resnet20", "resnet18", "resnet50")
    assert issubclass(ModelOptionError, InputError)
    # every option a builder takes has a check
    for name in MODEL_NAMES:
        assert set(zoo._OPTION_CHECKS[name]) == set(model_options(name)), name


@pytest.mark.parametrize("name,options", [
    ("mlp", {}),
    ("mlp", {"hidden": [500, 500], "activation": "relu"}),
    ("mlp", {"hidden": [], "activation": "sigmoid"}),
    ("convnet", {"channels": [8, 16], "hidden": 32, "batchnorm": True}),
    ("resnet20", {"zero_init_residual": True}),
    ("resnet18", {"stem": "cifar", "zero_init_residual": False}),
    ("resnet50", {"stem": "imagenet"}),
])
def test_good_options_pass_and_build(name, options):
    assert check_model_options(name, options) is None
    if name in ("mlp", "convnet"):
        net = build_model(name, (1, 8, 8), 3, make_rule("bp"), np, np.random.default_rng(0), **options)
        assert net.forward(np.zeros((2, *net.input_shape), np.float32)).shape == (2, 3)


@pytest.mark.parametrize("name,options,message", [
    ("resnet18", {"depth": 34},
     "unknown config key 'model_options.depth' for model resnet18; allowed: stem, zero_init_residual"),
    ("mlp", {"channels": [4]},
     "unknown config key 'model_options.channels' for model mlp; allowed: hidden, activation"),
    ("resnet20", {"stem": "cifar"}, "unknown config key 'model_options.stem' for model resnet20; "
                                    "allowed: zero_init_residual"),
    ("mlp", {"hidden": [10, 0]}, "config key model_options.hidden: expected a list of integers >= 1, got [10, 0]"),
    ("mlp", {"hidden": 64}, "config key model_options.hidden: expected a list of integers >= 1, got 64"),
    ("mlp", {"hidden": [True]}, "config key model_options.hidden: expected a list of integers >= 1, got [True]"),
    ("mlp", {"activation": "gelu"},
     "config key model_options.activation: 'gelu' is not allowed; allowed: relu, tanh, sigmoid"),
    ("resnet18", {"stem": "tiny"}, "config key model_options.stem: 'tiny' is not allowed; allowed: imagenet, cifar"),
    ("resnet50", {"stem": 3}, "config key model_options.stem: 3 is not allowed; allowed: imagenet, cifar"),
    ("convnet", {"channels": [32, 0]},
     "config key model_options.channels: expected a list of integers >= 1, got [32, 0]"),
    ("convnet", {"channels": "32"}, "config key model_options.channels: expected a list of integers >= 1, got '32'"),
    ("convnet", {"batchnorm": "yes"}, "config key model_options.batchnorm: expected true or false, got 'yes'"),
    ("convnet", {"hidden": 0}, "config key model_options.hidden: expected an integer >= 1, got 0"),
    ("convnet", {"hidden": [128]}, "config key model_options.hidden: expected an integer >= 1, got [128]"),
    ("convnet", {"hidden": True}, "config key model_options.hidden: expected an integer >= 1, got True"),
    ("resnet20", {"zero_init_residual": 1},
     "config key model_options.zero_init_residual: expected true or false, got 1"),
])
def test_each_bad_option_is_rejected_naming_the_key(name, options, message):
    with pytest.raises(ModelOptionError) as info:
        check_model_options(name, options)
    assert str(info.value) == message


def test_an_unknown_model_or_a_non_table_is_rejected():
    with pytest.raises(ModelOptionError, match="model: 'vgg' is not allowed; allowed: mlp, convnet, resnet20, "
                                               "resnet18, resnet50"):
        check_model_options("vgg", {})
    with pytest.raises(ModelOptionError, match="config key model_options: expected a table, got"):
        check_model_options("mlp", [("hidden", [3])])
