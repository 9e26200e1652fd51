"""The learning rules against their closed-form behaviour."""
import math

import numpy as np
import pytest

from weightmirror.circuits import rules
from weightmirror.circuits.rules import angle_degrees, make_rule
from weightmirror.models.layers import Linear
from weightmirror.models.optim import SGD


def _layer(rng, n_in=60, n_out=40):
    return Linear(n_in, n_out, np, rng)


# -- the angle metric -------------------------------------------------------
@pytest.mark.parametrize("degrees", [0.0, 10.0, 45.0, 90.0, 135.0, 180.0])
def test_angle_of_known_rotation(degrees):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 5))
    u = a / np.linalg.norm(a)
    q = rng.standard_normal((7, 5))
    q -= (q * u).sum() * u  # orthogonal to a
    q /= np.linalg.norm(q)
    t = math.radians(degrees)
    b = 3.0 * (math.cos(t) * u + math.sin(t) * q)
    assert angle_degrees(a, b) == pytest.approx(degrees, abs=1e-5)
    assert angle_degrees(b, a) == pytest.approx(degrees, abs=1e-5)


def test_angle_with_zero_array_is_nan():
    # no direction to compare is not an angle (it used to be reported as 90)
    assert math.isnan(angle_degrees(np.zeros(3), np.ones(3)))
    assert math.isnan(angle_degrees(np.ones((2, 3)), np.zeros((2, 3))))
    assert math.isnan(angle_degrees(np.zeros(4, np.float32), np.zeros(4, np.float32)))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_angle_with_a_non_finite_entry_is_nan(bad):
    a = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    b = a.copy()
    b[1, 0] = bad
    for x, y in ((a, b), (b, a), (b, b)):
        got = angle_degrees(x, y)
        assert math.isnan(got), (x, y, got)  # never 0° (min(1, nan) is 1) nor 90°


def test_angle_on_normal_input_is_the_hand_computed_one():
    # (1, 0) and (1, 1): 45°; (1, 2, 2) and (2, 1, -2): cos = (2 + 2 - 4) / 9 = 0 -> 90°;
    # (3, 4) and (4, 3): cos = 24/25 -> acos(0.96) = 16.2602...°
    assert angle_degrees(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(45.0, abs=1e-12)
    assert angle_degrees(np.array([1.0, 2.0, 2.0]), np.array([2.0, 1.0, -2.0])) == pytest.approx(90.0, abs=1e-12)
    assert angle_degrees(np.array([[3.0], [4.0]], np.float32), np.array([4.0, 3.0], np.float32)) == \
        pytest.approx(math.degrees(math.acos(24 / 25)), abs=1e-9)
    assert angle_degrees(np.array([1.0, 1.0]), np.array([-2.0, -2.0])) == pytest.approx(180.0, abs=1e-5)
    # huge but finite float32 entries still give their angle
    big = np.array([3e38, 1e38], np.float32)
    assert angle_degrees(big, big) == pytest.approx(0.0, abs=1e-5)


# -- registry and validation ------------------------------------------------
def test_registry_names_and_long_names():
    assert set(rules.RULE_NAMES) == {"bp", "fa", "ss", "usf", "brsf", "frsf", "wm", "kp"}
    assert make_rule("wm").long_name == "weight_mirror"
    assert make_rule("kp").long_name == "kolen_pollack"
    assert make_rule("fa").long_name == "feedback_alignment"
    assert make_rule("brsf").key == "brsf"


def test_rules_name_themselves_for_people():
    expected = {
        "bp": ("BP", "backprop"),
        "fa": ("FA", "feedback alignment"),
        "usf": ("uSF", "sign symmetry, uniform magnitude"),
        "brsf": ("brSF", "sign symmetry, batch-random magnitude"),
        "frsf": ("frSF", "sign symmetry, fixed-random magnitude"),
        "wm": ("WM", "weight mirror"),
        "kp": ("KP", "Kolen-Pollack"),
    }
    for key, (label, display) in expected.items():
        assert rules.rule_label(key) == label and make_rule(key).label == label
        assert rules.rule_display_name(key) == display and make_rule(key).display_name == display
    # the sign-symmetry names follow the magnitude, like its key
    assert make_rule("ss", magnitude="fixed_random").label == "frSF"
    assert rules.rule_label("ss") == "uSF"  # ss = uniform magnitude by default (key usf)
    assert rules.WeightMirror.label == "WM" and rules.KolenPollack.display_name == "Kolen-Pollack"
    # the snake_case id written to summary.json is unchanged
    assert make_rule("kp").long_name == "kolen_pollack"
    for fn in (rules.rule_label, rules.rule_display_name):
        with pytest.raises(rules.RuleError, match="unknown rule 'dfa'"):
            fn("dfa")


@pytest.mark.parametrize(
    "name, params, needle",
    [
        ("xx", {}, "allowed: bp, fa"),
        ("wm", {"sigma": -1.0}, "rule wm: sigma: must be > 0"),
        ("wm", {"sigma": float("inf")}, "rule wm: sigma: must be a finite number"),
        ("kp", {"decay_fraction": float("nan")}, "rule kp: decay_fraction: must be a finite number"),
        ("wm", {"mirror_batch_size": 2.5}, "rule wm: mirror_batch_size: expected an integer"),
        ("wm", {"normalize": "l2"}, "none, match_w"),
        ("wm", {"bogus": 1}, "unknown parameter 'bogus'"),
        ("kp", {"decay_total": -1.0}, "rule kp: decay_total: must be >= 0"),
        ("ss", {"magnitude": "huge"}, "uniform, batch_random, fixed_random"),
        ("usf", {"magnitude": "uniform"}, "unknown parameter 'magnitude'"),
    ],
)
def test_bad_parameters_are_clear_errors(name, params, needle):
    with pytest.raises(rules.RuleError, match=None) as info:
        make_rule(name, **params)
    assert needle in str(info.value)


# -- backprop ---------------------------------------------------------------
def test_backprop_reads_current_w_every_step(rng):
    layer = _layer(rng)
    bp = make_rule("bp")
    layer.init_feedback(bp, np, rng)
    assert layer.B is None
    layer.params["W"] += 1.0  # a later W, not a copy of the first
    assert bp.feedback(layer, np) is layer.W


# -- feedback alignment -----------------------------------------------------
def test_fa_feedback_is_fixed_and_independent_of_w(rng):
    layer = _layer(rng)
    fa = make_rule("fa")
    layer.init_feedback(fa, np, rng)
    B0 = layer.B.copy()
    assert 80 < angle_degrees(layer.B, layer.W) < 100
    assert np.sqrt(np.mean(B0**2)) == pytest.approx(np.sqrt(np.mean(layer.W**2)), rel=0.1)
    opt = SGD([layer], fa, np, momentum=0.9, weight_decay=0.01)
    layer.grads = {"W": rng.standard_normal(layer.W.shape).astype(np.float32), "b": np.zeros(40, np.float32)}
    opt.step(0.1)
    fa.after_step([layer], np, rng)
    np.testing.assert_array_equal(layer.B, B0)


# -- sign symmetry ----------------------------------------------------------
@pytest.mark.parametrize("name", ["usf", "brsf", "frsf"])
def test_sign_symmetry_feedback_carries_w_signs(name, rng):
    layer = _layer(rng)
    rule = make_rule(name)
    layer.init_feedback(rule, np, rng)
    F = rule.feedback(layer, np, rng).copy()  # a buffer the next call overwrites
    np.testing.assert_array_equal(np.sign(F), np.sign(layer.W))
    scale = np.sqrt(np.mean(layer.W**2))
    assert np.mean(np.abs(F)) == pytest.approx(scale, rel=0.1)
    F2 = rule.feedback(layer, np, rng).copy()
    if name == "usf":
        np.testing.assert_allclose(np.abs(F), scale, rtol=1e-6)
    if name == "brsf":
        assert not np.array_equal(F, F2)  # magnitudes redrawn every batch
    else:
        np.testing.assert_array_equal(F, F2)
    # signs follow W when W changes
    layer.params["W"] *= -1
    np.testing.assert_array_equal(np.sign(rule.feedback(layer, np, rng)), np.sign(layer.W))


# -- Kolen-Pollack ----------------------------------------------------------
@pytest.mark.parametrize("weight_decay, decay_total, const_decay", [(0.0, 3.0, 0.0), (0.1, 0.0, 0.0), (0.1, 2.0, 0.03)])
def test_kp_difference_shrinks_by_exactly_one_minus_lambda(weight_decay, decay_total, const_decay, rng):
    """‖W - Bᵀ‖ shrinks by the shared decay per step, whatever the data and momentum.

    The rule's own decay during its window (the first half of a run whose
    Σ η is 20): ``e^{-η λ}`` with ``λ = decay_total / (0.5 · 20)``.
    """
    from weightmirror.circuits.rules import Progress

    layer = _layer(rng)
    kp = make_rule("kp", decay_total=decay_total, decay_fraction=0.5, decay=const_decay, feedback_init="random")
    layer.init_feedback(kp, np, rng)
    opt = SGD([layer], kp, np, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    lr = 0.3
    expected = (1 - lr * weight_decay) * math.exp(-lr * decay_total / 10.0) * (1 - const_decay)
    for k in range(6):
        before = np.linalg.norm((layer.W - layer.B).astype(np.float64))
        layer.grads = {"W": rng.standard_normal(layer.W.shape).astype(np.float32) * 5,
                       "b": rng.standard_normal(40).astype(np.float32)}
        opt.step(lr, progress=Progress(k, k * lr, 20.0))
        after = np.linalg.norm((layer.W - layer.B).astype(np.float64))
        assert after / before == pytest.approx(expected, rel=2e-5)


def test_kp_b_changes_by_the_same_local_product(rng):
    layer = _layer(rng)
    kp = make_rule("kp")
    layer.init_feedback(kp, np, rng)
    W0, B0 = layer.W.copy(), layer.B.copy()
    g = rng.standard_normal(layer.W.shape).astype(np.float32)
    layer.grads = {"W": g, "b": np.zeros(40, np.float32)}
    SGD([layer], kp, np, momentum=0.0).step(0.1)
    np.testing.assert_allclose(layer.W - W0, -0.1 * g, atol=1e-6)
    np.testing.assert_allclose(layer.B - B0, -0.1 * g, atol=1e-6)


# -- weight mirror ----------------------------------------------------------
@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_wm_mean_hebbian_update_is_sigma2_w(noise, rng):
    """E[(1/m) Σ r ξᵀ] = σ² W for r = W ξ, ξ ~ (0, σ² I).

    Tolerance: over N = 40,000 noise samples each entry's standard error is
    σ² ‖w_row‖ / √N, so the relative Frobenius error is about √(n_in/N) ≈ 0.04;
    we allow 0.08 and require the direction within 4°.
    """
    layer = _layer(rng, n_in=60, n_out=30)
    wm = make_rule("wm", sigma=0.5, noise=noise)
    total = np.zeros_like(layer.W, dtype=np.float64)
    batches = 200
    for _ in range(batches):
        total += wm.hebbian_estimate(layer, np, rng, batch_size=200)
    mean = total / batches
    target = 0.25 * layer.W
    rel = np.linalg.norm(mean - target) / np.linalg.norm(target)
    assert rel < 0.08
    assert angle_degrees(mean, layer.W) < 4.0


def test_wm_mirror_mode_aligns_a_random_layer(rng):
    layer = _layer(rng, n_in=100, n_out=50)
    wm = make_rule("wm", lr=0.02, decay=0.02, mirror_batch_size=64)
    layer.init_feedback(wm, np, rng)
    assert angle_degrees(layer.B, layer.W) > 80
    W0 = layer.W.copy()
    wm.mirror_phase([layer], np, rng, batches=400, lr=0.02, decay=0.02)
    assert angle_degrees(layer.B, layer.W) < 10.0
    np.testing.assert_array_equal(layer.W, W0)  # mirror mode changes B only
    # fixed point B = (η σ² / λ) W = W: the scale too
    assert np.linalg.norm(layer.B) / np.linalg.norm(layer.W) == pytest.approx(1.0, abs=0.15)


def test_wm_decay_acts_on_the_stored_b(rng):
    layer = _layer(rng)
    wm = make_rule("wm", lr=0.0, decay=0.1)
    layer.init_feedback(wm, np, rng)
    B0 = layer.B.copy()
    stored = layer.B
    wm.mirror_phase([layer], np, rng, batches=3, lr=0.0, decay=0.1)
    assert layer.B is stored
    np.testing.assert_allclose(layer.B, B0 * 0.9**3, rtol=1e-5)


def test_wm_norm_control_matches_w(rng):
    layer = _layer(rng)
    wm = make_rule("wm", lr=5.0, decay=0.0, normalize="match_w")
    layer.init_feedback(wm, np, rng)
    wm.mirror_phase([layer], np, rng, batches=5, lr=5.0, decay=0.0)
    assert np.linalg.norm(layer.B) == pytest.approx(np.linalg.norm(layer.W), rel=1e-5)


def test_wm_layer_response_scales_by_mean_slope(rng):
    """Stein's lemma: with r = relu(W ξ), E[r ξᵀ] = σ² diag(P(active)) W ≈ σ²/2 W."""
    from weightmirror.models.layers import ReLU

    layer = Linear(40, 20, np, rng)
    layer.mirror_activation = ReLU()
    wm = make_rule("wm", response="layer")
    total = sum(wm.hebbian_estimate(layer, np, rng, batch_size=500) for _ in range(100)) / 100
    assert angle_degrees(total, layer.W) < 5.0
    assert np.linalg.norm(total) / np.linalg.norm(layer.W) == pytest.approx(0.5, abs=0.05)


def test_kp_decay_window_stops_the_rules_own_decay(rng):
    """Past decay_fraction of the learning, W - Bᵀ stays constant (only the shared local product acts)."""
    from weightmirror.circuits.rules import Progress

    layer = _layer(rng)
    kp = make_rule("kp", decay_total=5.0, decay_fraction=0.5, feedback_init="random")
    layer.init_feedback(kp, np, rng)
    opt = SGD([layer], kp, np, momentum=0.9)
    # Σ η = 10 over the run: λ = 5 / (0.5 · 10) = 1 per unit learning rate in the first half
    for done, expected in ((2.0, math.exp(-0.1 * 1.0)), (6.0, 1.0)):
        before = np.linalg.norm((layer.W - layer.B).astype(np.float64))
        layer.grads = {"W": rng.standard_normal(layer.W.shape).astype(np.float32), "b": np.zeros(40, np.float32)}
        opt.step(0.1, progress=Progress(0, done, 10.0))
        after = np.linalg.norm((layer.W - layer.B).astype(np.float64))
        assert after / before == pytest.approx(expected, rel=2e-5)


def test_kp_zero_feedback_init_starts_silent_and_still_converges(rng):
    from weightmirror.circuits.rules import Progress

    layer = _layer(rng)
    kp = make_rule("kp", decay_total=2.0, decay_fraction=1.0, feedback_init="zero")
    layer.init_feedback(kp, np, rng)
    assert not layer.B.any()
    opt = SGD([layer], kp, np, momentum=0.9)
    gap0 = np.linalg.norm(layer.W.astype(np.float64))  # W - B = W at the start
    for k in range(20):  # 20 steps of 0.2: the whole run, Σ η = 4
        layer.grads = {"W": rng.standard_normal(layer.W.shape).astype(np.float32), "b": np.zeros(40, np.float32)}
        opt.step(0.2, progress=Progress(k, 0.2 * k, 4.0))
    gap = np.linalg.norm((layer.W - layer.B).astype(np.float64))
    assert gap / gap0 == pytest.approx(math.exp(-2.0), rel=1e-4)  # e^{-decay_total}
    with pytest.raises(rules.RuleError, match="random, zero, mirror"):
        make_rule("kp", feedback_init="ones")
