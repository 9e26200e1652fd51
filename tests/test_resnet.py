"""ResNets, the small convnet and the model registry."""
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from weightmirror.circuits.rules import angle_degrees, make_rule
from weightmirror.models.layers import BackwardContext, softmax_cross_entropy
from weightmirror.models.resnet import BasicBlock, Bottleneck
from weightmirror.models.zoo import MODEL_NAMES, build_model, model_options


def n_params(net):
    return sum(int(a.size) for m in net.parameter_modules() for a in m.params.values())


@pytest.mark.parametrize("name,count", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_imagenet_resnet_parameter_counts_and_output_shape(name, count):
    rng = np.random.default_rng(0)
    net = build_model(name, (3, 224, 224), 1000, make_rule("bp"), np, rng)
    assert n_params(net) == count
    assert net.input_shape == (3, 224, 224)
    # every conv and linear layer is a weight layer of the rule
    assert len(net.weight_layers) == {"resnet18": 21, "resnet50": 54}[name]
    out = net.forward(rng.standard_normal((1, 3, 64, 64), dtype=np.float32), train=False)
    assert out.shape == (1, 1000) and out.dtype == np.float32 and np.isfinite(out).all()


def test_resnet20_and_convnet_shapes():
    rng = np.random.default_rng(1)
    net = build_model("resnet20", (3, 32, 32), 10, make_rule("fa"), np, rng)
    assert len(net.weight_layers) == 22  # 19 convs + 2 projections + fc
    assert all(layer.B is not None for layer in net.weight_layers)
    assert net.forward(rng.standard_normal((2, 3, 32, 32), dtype=np.float32)).shape == (2, 10)
    cnet = build_model("convnet", (1, 28, 28), 10, make_rule("bp"), np, rng)
    assert n_params(cnet) == (32 * 9 + 32) + (64 * 32 * 9 + 64) + (3136 * 128 + 128) + (128 * 10 + 10)
    assert cnet.forward(rng.standard_normal((3, 1, 28, 28), dtype=np.float32)).shape == (3, 10)


def _sgd_step(net, lr):
    for m in net.parameter_modules():
        for name, p in m.params.items():
            p -= np.float32(lr) * m.grads[name]


def test_one_resnet18_step_lowers_the_batch_loss():
    rng = np.random.default_rng(2)
    net = build_model("resnet18", (3, 32, 32), 10, make_rule("bp"), np, rng)
    x = rng.standard_normal((2, 3, 32, 32), dtype=np.float32)
    y = np.array([3, 7])
    loss0, g = softmax_cross_entropy(net.forward(x), y, np)
    net.backward(g, rng)
    assert all("W" in layer.grads for layer in net.weight_layers)
    _sgd_step(net, 0.01)
    loss1, _ = softmax_cross_entropy(net.forward(x), y, np)
    assert loss1 < loss0 - 1e-3, (loss0, loss1)


@pytest.mark.parametrize("block_cls,c_in,planes,stride", [
    (BasicBlock, 3, 4, 2), (BasicBlock, 4, 4, 1), (Bottleneck, 4, 2, 2), (Bottleneck, 8, 2, 1)])
def test_residual_block_gradients_match_finite_differences(block_cls, c_in, planes, stride):
    rng = np.random.default_rng(3)
    blk = block_cls(c_in, planes, np, rng, stride=stride, input_hw=(6, 6), dtype=np.float64)
    assert bool(blk.shortcut) == (stride != 1 or c_in != planes * block_cls.expansion)
    for m in blk.children():
        if "gamma" in m.params:
            m.params["gamma"][...] = rng.uniform(0.5, 1.5, m.params["gamma"].shape)
            m.params["beta"][...] = rng.standard_normal(m.params["beta"].shape)
    x = rng.standard_normal((3, c_in, 6, 6))
    y = blk.forward(x)
    assert y.shape[2:] == blk.output_hw
    r = rng.standard_normal(y.shape)
    loss = lambda: float((blk.forward(x) * r).sum())  # noqa: E731
    ctx = BackwardContext(make_rule("bp"), np, rng, use_backprop=True)
    blk.forward(x)
    dx = np.array(blk.backward(r, ctx))
    convs = [m for m in blk.children() if "W" in m.params]
    dWs = [c.grads["W"].copy() for c in convs]
    for arr, grad in [(x, dx)] + [(c.params["W"], g) for c, g in zip(convs, dWs)]:
        for _ in range(2):
            d = rng.standard_normal(arr.shape)
            eps = 1e-6
            arr += eps * d
            fp = loss()
            arr -= 2 * eps * d
            fm = loss()
            arr += eps * d
            num, ana = (fp - fm) / (2 * eps), float((grad * d).sum())
            assert abs(num - ana) <= 1e-5 * max(1.0, abs(num)), (num, ana)


def test_feedback_alignment_with_B_equal_W_is_backprop_through_residual_blocks():
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8), dtype=np.float32)
    y = np.array([1, 0])
    out = {}
    for rule in ("bp", "fa"):
        net = build_model("resnet20", (3, 8, 8), 3, make_rule(rule), np, np.random.default_rng(5))
        if rule == "fa":
            for layer in net.weight_layers:
                layer.B = layer.W.copy()
        _, g = softmax_cross_entropy(net.forward(x), y, np)
        record = []
        net.backward(g, np.random.default_rng(6), record=record)
        out[rule] = ([layer.grads["W"] for layer in net.weight_layers], record)
    assert len(out["bp"][1]) == 22
    for a, b in zip(out["bp"][0] + out["bp"][1], out["fa"][0] + out["fa"][1]):
        assert np.array_equal(a, b)


def test_weight_mirror_runs_before_the_first_batch():
    rng = np.random.default_rng(7)
    rule = make_rule("wm", initial_angle=10.0, initial_mirror_batch_size=64)
    net = build_model("resnet20", (3, 8, 8), 3, rule, np, rng)
    before = [angle_degrees(layer.B, layer.W) for layer in net.weight_layers]
    with threadpool_limits(1):  # tiny products: BLAS threads only add overhead
        rule.initial_phase(net.weight_layers, np, rng)
    after = [angle_degrees(layer.B, layer.W) for layer in net.weight_layers]
    assert min(before) > 70
    # every layer whose B carries an error is mirrored to about the initial angle (no input
    # size was needed; a convolution's output positions count as samples); the input layer's
    # B is not mirrored
    assert after[0] == before[0]
    assert all(a < 10.0 * 1.3 for a in after[1:]), (before, after)


def test_registry_errors_and_mlp():
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match="allowed: mlp, convnet, resnet20, resnet18, resnet50"):
        build_model("vgg", (1, 28, 28), 10, make_rule("bp"), np, rng)
    with pytest.raises(ValueError, match="unknown option 'depth'"):
        build_model("resnet18", (3, 32, 32), 10, make_rule("bp"), np, rng, depth=34)
    assert set(MODEL_NAMES) == {"mlp", "convnet", "resnet20", "resnet18", "resnet50"}
    assert model_options("mlp") == ("hidden", "activation")
    net = build_model("mlp", (1, 28, 28), 10, make_rule("kp"), np, rng, hidden=[32, 16], activation="tanh")
    assert net.input_shape == (784,)
    assert [layer.W.shape for layer in net.weight_layers] == [(32, 784), (16, 32), (10, 16)]
    cifar = build_model("resnet18", (3, 32, 32), 10, make_rule("bp"), np, rng, stem="cifar")
    assert cifar.forward(rng.standard_normal((1, 3, 32, 32), dtype=np.float32)).shape == (1, 10)


@pytest.mark.parametrize("name,shape", [("convnet", (1, 8, 8)), ("resnet20", (3, 8, 8))])
def test_backward_can_run_twice_after_one_forward(name, shape):
    """The trainer measures backprop's δ and the rule's δ on the same forward pass."""
    rng = np.random.default_rng(9)
    net = build_model(name, shape, 3, make_rule("fa"), np, rng)
    x = rng.standard_normal((2, *shape), dtype=np.float32)
    _, g = softmax_cross_entropy(net.forward(x), np.array([0, 2]), np)
    first, second = [], []
    net.backward(g, rng, use_backprop=True, record=first)
    net.backward(g, rng, record=second)
    net.backward(g, rng, use_backprop=True, record=(third := []))
    assert len(first) == len(second) == len(net.weight_layers)
    for a, b in zip(first, third):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[-1], second[-1])  # FA's δ differs from backprop's below the top


def test_convnet_with_batchnorm_structure_and_input_gradient():
    from weightmirror.models.norm import BatchNorm1d, BatchNorm2d

    rng = np.random.default_rng(3)
    net = build_model("convnet", (1, 12, 12), 4, make_rule("bp"), np, rng, channels=(3, 5), hidden=6, batchnorm=True)
    mods = [m for _, m in net.named_modules()]
    assert sum(isinstance(m, BatchNorm2d) and not isinstance(m, BatchNorm1d) for m in mods) == 2
    assert sum(isinstance(m, BatchNorm1d) for m in mods) == 1
    # batch norm follows every layer but the last: those drop their bias
    assert ["b" in layer.params for layer in net.weight_layers] == [False, False, False, True]
    assert n_params(net) == 3 * 9 + 5 * 3 * 9 + 45 * 6 + 6 * 4 + 4 + 2 * (3 + 5 + 6)
    # the network's input gradient (conv, BN2d, pool, BN1d chained) against finite differences
    for layer in net.weight_layers:
        for k in layer.params:
            layer.params[k] = layer.params[k].astype(np.float64)
    for m in mods:
        for k in m.params:
            m.params[k] = m.params[k].astype(np.float64)
    x = rng.standard_normal((4, 1, 12, 12))
    y = np.array([0, 1, 2, 3])
    loss, d = softmax_cross_entropy(net.forward(x), y, np)
    net.backward(d)
    g = net.weight_layers[2].grads["W"]
    W = net.weight_layers[2].params["W"]
    for idx in [(0, 0), (3, 17), (5, 44)]:
        old = W[idx]
        W[idx] = old + 1e-6
        lp = softmax_cross_entropy(net.forward(x), y, np)[0]
        W[idx] = old - 1e-6
        lm = softmax_cross_entropy(net.forward(x), y, np)[0]
        W[idx] = old
        assert g[idx] == pytest.approx((lp - lm) / 2e-6, rel=1e-4, abs=1e-9)


def test_convnet_batchnorm_option_is_validated():
    from weightmirror.errors import InputError
    from weightmirror.sims import config

    with pytest.raises(InputError, match="model_options.batchnorm: expected true or false"):
        config.resolve({"model": "convnet", "data": "digits", "model_options": {"batchnorm": "yes"}})
    cfg = config.resolve({"model": "convnet", "data": "digits", "model_options": {"batchnorm": True}})
    assert cfg.model_options["batchnorm"] is True
