"""GPU convolutions: cuDNN (through nvidia-cudnn-frontend) against im2col + cuBLAS
and against the NumPy reference (marked gpu; skips without one).

The cuDNN tests also skip, with the reason, when the frontend package or the
cuDNN library is missing; ``bench/gpu_check.sh`` installs the frontend from
carried wheels so that they run there.
"""
import numpy as np
import pytest

from weightmirror.circuits.rules import make_rule
from weightmirror.models import conv as conv_mod
from weightmirror.models.backend import GPUOptions, get_array_module, gpu_options, make_rng, to_numpy, use_gpu_options
from weightmirror.models.conv import Conv2d
from weightmirror.models.layers import BackwardContext, softmax_cross_entropy
from weightmirror.models.zoo import build_model

pytestmark = pytest.mark.gpu


@pytest.fixture
def cp():
    cupy = get_array_module("cuda")
    yield cupy
    assert gpu_options() == GPUOptions(), "a test left GPU options in force"


def _cudnn_or_skip():
    from weightmirror.models import cudnn_conv

    if not cudnn_conv.available():
        pytest.skip(f"cuDNN frontend unavailable: {cudnn_conv.unavailable_reason()}")


@pytest.mark.parametrize("k,stride,pad,hw", [(3, 1, 1, 9), (3, 2, 1, 9), (1, 2, 0, 8), (7, 2, 3, 16), (1, 1, 0, 5)])
def test_cudnn_conv_matches_numpy(cp, k, stride, pad, hw):
    _cudnn_or_skip()
    rng = np.random.default_rng(0)
    ref = Conv2d(4, 6, k, np, make_rng(np, 0), stride=stride, padding=pad, bias=True)
    ref.params["b"][...] = rng.standard_normal(6)
    g = Conv2d(4, 6, k, cp, make_rng(cp, 0), stride=stride, padding=pad, bias=True)
    for name in ref.params:
        g.params[name][...] = cp.asarray(ref.params[name])
    F = rng.standard_normal(ref.params["W"].shape).astype(np.float32)  # a feedback kernel != W
    x = rng.standard_normal((3, 4, hw, hw)).astype(np.float32)
    rule = make_rule("fa")
    ref.B, g.B = F, cp.asarray(F)
    with use_gpu_options(conv_algorithm="cudnn"):
        y_ref = ref.forward(x)
        y = g.forward(cp.asarray(x))
        assert g._x is not None, "the forward pass did not take the cuDNN path"
        np.testing.assert_allclose(to_numpy(y), y_ref, rtol=1e-4, atol=1e-4)
        dy = rng.standard_normal(y_ref.shape).astype(np.float32)
        dx_ref = ref.backward(dy, BackwardContext(rule, np, None))
        dx = g.backward(cp.asarray(dy), BackwardContext(rule, cp, None))
        np.testing.assert_allclose(to_numpy(dx), dx_ref, rtol=1e-4, atol=1e-4)
        for name in ("W", "b"):
            np.testing.assert_allclose(to_numpy(g.grads[name]), ref.grads[name], rtol=1e-4, atol=1e-3)
        # the Hebbian product (weight mirror) through cuDNN
        np.testing.assert_allclose(to_numpy(g.hebbian(cp.asarray(x), cp.asarray(dy))), ref.hebbian(x, dy),
                                   rtol=1e-4, atol=1e-3)


def test_cudnn_accepts_channel_major_inputs(cp):
    _cudnn_or_skip()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    g = Conv2d(3, 5, 3, cp, make_rng(cp, 0), padding=1, bias=False)
    with use_gpu_options(conv_algorithm="im2col"):
        y_ref = to_numpy(g.forward(cp.asarray(x)))
    with use_gpu_options(conv_algorithm="cudnn"):
        xcm = cp.ascontiguousarray(cp.asarray(x).transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
        np.testing.assert_allclose(to_numpy(g.forward(xcm)), y_ref, rtol=1e-4, atol=1e-4)


def test_auto_algorithm_records_a_measured_choice(cp):
    assert gpu_options().conv_algorithm == "auto"
    g = Conv2d(8, 8, 3, cp, make_rng(cp, 0), padding=1, bias=False)
    g.forward(cp.ones((4, 8, 10, 10), dtype=cp.float32))
    rows = [r for r in conv_mod.autotune_table() if r["input_shape"] == (4, 8, 10, 10) and r["c_out"] == 8]
    assert len(rows) == 1 and rows[0]["algorithm"] in ("im2col", "cudnn")
    assert rows[0]["im2col_s"] > 0


@pytest.mark.parametrize("rule", ["bp", "fa", "wm", "kp"])
def test_resnet18_step_cudnn_equals_im2col(cp, rule):
    _cudnn_or_skip()
    out = {}
    for algo in ("im2col", "cudnn"):
        with use_gpu_options(conv_algorithm=algo):
            r = make_rule(rule)
            net = build_model("resnet18", (3, 32, 32), 10, r, cp, make_rng(cp, 0), stem="cifar")
            x = make_rng(cp, 1).standard_normal((4, 3, 32, 32), dtype=cp.float32)
            y = cp.arange(4) % 10
            loss, d = softmax_cross_entropy(net.forward(x), y, cp)
            net.backward(d, rng=make_rng(cp, 2))
            out[algo] = (float(loss), [to_numpy(l.grads["W"]) for l in net.weight_layers])
    assert out["im2col"][0] == pytest.approx(out["cudnn"][0], rel=1e-4)
    for a, b in zip(out["im2col"][1], out["cudnn"][1]):
        np.testing.assert_allclose(b, a, rtol=2e-3, atol=2e-3 * float(np.abs(a).max()) + 1e-6)


def test_tf32_switch_changes_matmul_precision(cp):
    a = cp.asarray(np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32))
    exact = to_numpy(a).astype(np.float64) @ to_numpy(a).astype(np.float64)
    from cupy._core import _routines_linalg as linalg

    before = linalg.get_compute_type(cp.float32)
    with use_gpu_options(tf32=False):
        err32 = float(np.abs(to_numpy(a @ a) - exact).max())
        with use_gpu_options(tf32=True):
            err_tf32 = float(np.abs(to_numpy(a @ a) - exact).max())
        # the inner context put float32 back
        err32_again = float(np.abs(to_numpy(a @ a) - exact).max())
    assert err32 < 1e-3 < err_tf32, (err32, err_tf32)
    assert err32_again < 1e-3, err32_again
    # and cuBLAS's compute type is as it was before the first context
    assert linalg.get_compute_type(cp.float32) == before
