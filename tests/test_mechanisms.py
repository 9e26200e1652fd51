"""The robustness mechanisms against their closed-form behaviour.

- the weight mirror's error ``ε² = F λ/(2m) + (d/λ)²`` for a W that moves at
  a known rate, and the adaptive mirror holding its target angle;
- the initial mirror phase's ``N₀ = F / tan² θ₀`` samples;
- the learning-scheduled decay reaching ``Σ η λ = decay_total`` whatever
  the run's length and schedule;
- Kolen-Pollack from a mirror-calibrated start keeping ``W - Bᵀ`` exactly.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from weightmirror.circuits.rules import (
    Backprop,
    KolenPollack,
    Progress,
    WeightMirror,
    angle_degrees,
    own_decay_factor,
)
from weightmirror.models.optim import Schedule, lr_mass


class _Layer:
    """A Linear layer as the rules see it."""

    needs_input_grad = True

    def __init__(self, W, B=None):
        self.W = W
        self.B = np.zeros_like(W) if B is None else B
        self.mirror_input_shape = (W.shape[1],)

    def linear_response(self, x):
        return x @ self.W.T

    def hebbian(self, pre, post):
        return post.T @ pre


def _layer(rng, out=60, fan_in=300):
    W = (rng.standard_normal((out, fan_in)) / math.sqrt(fan_in)).astype(np.float32)
    return _Layer(W)


@pytest.mark.parametrize("moments", [False, True], ids=["samples", "moments"])
@pytest.mark.parametrize("decay, samples, drift", [(0.004, 16, 0.0), (0.02, 64, 0.0), (0.02, 64, 4e-4)])
def test_mirror_error_follows_the_closed_form(decay, samples, drift, moments):
    """Explicit noise and the draw from its moments give the closed form's error alike."""
    rng = np.random.default_rng(0)
    layer = _layer(rng)
    layer.B = layer.W.copy()
    v = rng.standard_normal(layer.W.shape).astype(np.float32)
    v *= drift * np.linalg.norm(layer.W) / max(np.linalg.norm(v), 1e-30)
    rule = WeightMirror(adaptive=False, noise="uniform")
    angles = []
    for t in range(int(8 / decay)):
        layer.W += v
        rule.mirror_update(layer, np, rng, decay, decay, samples, moments=samples if moments else 0)
        if t > 4 / decay:
            angles.append(angle_degrees(layer.B, layer.W))
    predicted = math.degrees(math.atan(WeightMirror.predicted_error(300, decay, samples, drift)))
    assert np.mean(angles) == pytest.approx(predicted, rel=0.1)


def test_plan_meets_the_target_with_the_fewest_samples():
    rule = WeightMirror(target_angle=8.0, lag_angle=8.0, max_samples=10**6)  # no separate lag bound
    tau = math.tan(math.radians(8.0))
    for fan_in, drift in [(300, 1e-4), (784, 5e-4), (256, 3e-3)]:
        decay, m = rule.plan(fan_in, drift)
        eps = WeightMirror.predicted_error(fan_in, decay, m, drift)
        assert eps == pytest.approx(tau, rel=0.02)
        # the optimum in λ: a 20 % larger or smaller decay is worse
        for other in (0.8 * decay, 1.2 * decay):
            assert WeightMirror.predicted_error(fan_in, other, m, drift) > eps
    # a cap on the samples leaves the best angle those samples allow
    decay, m = WeightMirror(target_angle=8.0, lag_angle=8.0, max_samples=10).plan(784, 5e-4)
    assert m == 10 and WeightMirror.predicted_error(784, decay, m, 5e-4) > tau


@pytest.mark.parametrize("fan_in, drift", [(300, 1e-4), (784, 5e-4), (256, 3e-3), (256, 1.5e-2)])
def test_plan_holds_the_lag_below_its_bound(fan_in, drift):
    """With ``lag_angle`` the lag d/λ stays within tan θ_lag, and the noise takes what is left of θ*."""
    tau, lag = math.tan(math.radians(8.0)), math.tan(math.radians(2.0))
    decay, m = WeightMirror(target_angle=8.0, lag_angle=2.0, max_samples=10**6).plan(fan_in, drift)
    assert drift / decay <= lag * (1 + 1e-9)
    assert WeightMirror.predicted_error(fan_in, decay, m, drift) <= tau * (1 + 1e-9)
    cheapest = WeightMirror(target_angle=8.0, lag_angle=8.0, max_samples=10**6).plan(fan_in, drift)
    assert m >= cheapest[1] and decay >= cheapest[0]  # the bound costs samples, never saves them
    # samples capped: the lag bound is kept, the noise grows
    decay, m = WeightMirror(target_angle=8.0, lag_angle=2.0, max_samples=10).plan(fan_in, drift)
    assert m == 10 and drift / decay <= lag * (1 + 1e-9)


@pytest.mark.parametrize("estimator", ["samples", "moments", "auto"])
def test_adaptive_mirror_holds_its_target_on_a_moving_W(estimator):
    """W moves by a fixed fraction per step; the adaptive mirror keeps B within ~θ*."""
    rng = np.random.default_rng(1)
    layer = _layer(rng)
    rule = WeightMirror(target_angle=8.0, initial_angle=3.0, noise="uniform", max_samples=4096, estimator=estimator)
    rule.initial_phase([layer], np, rng)
    assert angle_degrees(layer.B, layer.W) == pytest.approx(3.0, abs=0.6)
    direction = rng.standard_normal(layer.W.shape).astype(np.float32)
    angles, samples = [], []
    for step in range(2000):
        d = 1e-3 if step < 1000 else 1e-5  # fast learning, then almost none
        delta = direction * (d * np.linalg.norm(layer.W) / np.linalg.norm(direction))
        layer.W += delta
        rule.after_weight_update(layer, delta, 1.0, np)
        rule.after_step([layer], np, rng, Progress(step, 0.0, 1.0))
        if step in range(400, 1000) or step > 1600:
            angles.append(angle_degrees(layer.B, layer.W))
        samples.append(layer._mirror_plan[1])
    assert max(angles[:600]) < 8.0 * 1.25  # while W moves fast
    assert max(angles[600:]) < 8.0 * 1.25  # and after
    assert np.mean(samples[1700:]) < 0.1 * np.mean(samples[200:900])  # the mirror's cost follows the drift


def test_initial_phase_draws_fan_in_over_tan_squared_samples():
    rng = np.random.default_rng(2)
    for theta in (2.0, 5.0):
        layer = _layer(rng)
        draws = []
        rule = WeightMirror(initial_angle=theta, noise="gaussian", estimator="samples")
        real = rule.mirror_update

        def counting(layer_, xp, rng_, lr, decay, batch_size, real=real):
            draws.append(batch_size)
            real(layer_, xp, rng_, lr, decay, batch_size)

        object.__setattr__(rule, "mirror_update", counting)
        rule.initial_phase([layer], np, rng)
        assert sum(draws) == math.ceil(300 / math.tan(math.radians(theta)) ** 2)
        assert angle_degrees(layer.B, layer.W) == pytest.approx(theta, rel=0.2)


def test_the_input_layer_is_not_mirrored_unless_asked():
    rng = np.random.default_rng(3)
    first, second = _layer(rng), _layer(rng)
    first.needs_input_grad = False
    WeightMirror(initial_angle=5.0).initial_phase([first, second], np, rng)
    assert not first.B.any() and angle_degrees(second.B, second.W) < 7
    WeightMirror(initial_angle=5.0, mirror_input_layer=True).initial_phase([first], np, rng)
    assert angle_degrees(first.B, first.W) < 7


@pytest.mark.parametrize("steps, kind", [(240, "cosine"), (14_040, "cosine"), (500, "constant")])
@pytest.mark.parametrize("total, fraction", [(4.0, 0.25), (1.0, 0.5)])
def test_own_decay_totals_its_target_whatever_the_run(steps, kind, total, fraction):
    epochs = 10
    per_epoch = steps // epochs
    schedule = Schedule(0.01 if steps > 1000 else 0.05, kind, epochs)
    lr_total = lr_mass(schedule, epochs, per_epoch)
    product, spent = 1.0, 0.0
    for k in range(epochs * per_epoch):
        lr = schedule(k // per_epoch + (k % per_epoch) / per_epoch)
        product *= own_decay_factor(lr, Progress(k, spent, lr_total), total, fraction)
        spent += lr
    # Π e^{-η λ} = e^{-Σ η λ}, the last step of the window decaying by what is left
    assert -math.log(product) == pytest.approx(total, rel=1e-9)
    assert own_decay_factor(0.01, None, total, fraction) == 1.0  # no progress, no decay


def test_kolen_pollack_from_a_mirror_start_keeps_the_difference():
    """B₀ from the initial mirror is within θ₀ of W₀ᵀ; without a decay, W - Bᵀ never changes."""
    rng = np.random.default_rng(4)
    layer = _layer(rng)
    rule = KolenPollack(feedback_init="mirror", decay_total=0.0, initial_angle=3.0)
    layer.B = rule.init_feedback(layer.W, np, rng)
    assert not layer.B.any()
    rule.initial_phase([layer], np, rng)
    assert angle_degrees(layer.B, layer.W) == pytest.approx(3.0, abs=0.6)
    diff = layer.W - layer.B
    for _ in range(50):
        step = (rng.standard_normal(layer.W.shape) * 0.01).astype(np.float32)
        layer.W += step
        rule.after_weight_update(layer, step, 1.0, np)
    np.testing.assert_allclose(layer.W - layer.B, diff, atol=1e-5)


def test_backprop_control_decays_like_kolen_pollack():
    p = Progress(0, 0.0, 100.0)
    kp = KolenPollack(decay_total=3.0, decay_fraction=0.5)
    assert Backprop(decay_total=3.0, decay_fraction=0.5).weight_decay_factor(0.01, p) == kp.weight_decay_factor(0.01, p)
    assert Backprop().weight_decay_factor(0.01, p) == 1.0


def test_the_adaptive_mirror_stays_within_its_cost_budget():
    """When W moves so fast that the ideal samples would cost more than ``max_cost`` of a
    training step, every layer's samples are scaled down alike (and each takes its best decay)."""
    rng = np.random.default_rng(5)
    layers = [_layer(rng, out=200, fan_in=300), _layer(rng, out=10, fan_in=200)]
    rule = WeightMirror(target_angle=5.0, max_cost=0.5, estimator="samples")
    for layer in layers:
        layer.B = layer.W.copy()
        rule.prepare_layer(layer, np)
        step = np.full_like(layer.W, 0.01) * np.linalg.norm(layer.W) / math.sqrt(layer.W.size)
        rule.after_weight_update(layer, step, 1.0, np)  # a drift of 1 % per step
    rule.after_step(layers, np, rng, Progress(0, 0.0, 1.0, samples_per_step=32))
    samples = [layer._mirror_plan[1] for layer in layers]
    work = [WeightMirror._work(layer) for layer in layers]
    spent = sum(m * w for m, (w, _) in zip(samples, work))
    budget = 0.5 * 32 * sum(t for _, t in work)
    assert spent == pytest.approx(budget, rel=1e-6)
    ideal = [rule.plan(300, 0.01)[1], rule.plan(200, 0.01)[1]]
    assert all(m < i for m, i in zip(samples, ideal))
    assert samples[0] / ideal[0] == pytest.approx(samples[1] / ideal[1], rel=1e-4)  # scaled alike


# -- the Hebbian sum drawn from its moments ----------------------------------------


@pytest.mark.parametrize("noise, excess", [("gaussian", 2.0), ("uniform", 0.8)])
@pytest.mark.parametrize("moments", [False, True], ids=["samples", "moments"])
def test_hebbian_sum_has_the_same_mean_and_variance_drawn_or_sampled(noise, excess, moments):
    """``H`` of ``m`` samples: mean ``σ² W``, and entrywise variance
    ``σ⁴ (‖W_o‖² + (κ - 2) W_oj²) / m`` (``Var E_ij = 1/m``, ``(κ - 1)/m`` on the diagonal),
    whether the noise is fired or ``Ĉ`` drawn from its moments."""
    rng = np.random.default_rng(11)
    layer = _layer(rng, out=6, fan_in=40)
    layer.W[:, :3] *= 6.0  # a few large weights make the diagonal term visible
    sigma, m, draws = 1.5, 50, 4000
    rule = WeightMirror(noise=noise, sigma=sigma)
    H = np.stack([rule.moments_estimate(layer, np, rng, m) if moments
                  else rule.hebbian_estimate(layer, np, rng, m) for _ in range(draws)]).astype(np.float64)
    W = layer.W.astype(np.float64)
    expected_var = sigma ** 4 * ((W ** 2).sum(axis=1, keepdims=True) + (excess - 1.0) * W ** 2) / m  # κ - 2 = excess - 1
    np.testing.assert_allclose(H.mean(axis=0), sigma ** 2 * W, atol=4 * np.sqrt(expected_var.max() / draws))
    ratio = H.var(axis=0) / expected_var
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
    # the diagonal term: the taps with large weights have the variance that κ says
    assert ratio[:, :3].mean() == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize("moments", [False, True], ids=["samples", "moments"])
def test_initial_phase_of_a_convolution_reaches_its_angle(moments):
    """A convolution's initial phase: ``N₀ = F / tan² θ₀`` samples (positions × images, or
    one draw) put B ``θ₀`` from W, whatever the image size."""
    from weightmirror.models.conv import Conv2d

    rng = np.random.default_rng(12)
    for hw in ((6, 6), (20, 20)):
        conv = Conv2d(8, 16, 3, rng=rng, xp=np, padding=1, input_hw=hw)
        conv.B = np.zeros_like(conv.W)
        conv.needs_input_grad = True
        rule = WeightMirror(initial_angle=5.0, noise="uniform", estimator="moments" if moments else "samples")
        rule.initial_phase([conv], np, rng)
        assert angle_degrees(conv.B, conv.W) == pytest.approx(5.0, rel=0.15)


def test_auto_draws_each_update_the_cheaper_way():
    """``auto``: a moment draw (``F² (C + R)`` multiply-adds) where it costs less than the
    samples (``m (2 F C + R F)``), explicit noise where they cost less; never for a nonlinear response."""
    rng = np.random.default_rng(13)
    layer = _layer(rng, out=60, fan_in=300)
    rule = WeightMirror()
    per_sample = WeightMirror._work(layer)[0]
    assert per_sample == 2 * 60 * 300 + WeightMirror.RANDOM_WORK * 300
    assert WeightMirror.moment_work(layer) == 300 * 300 * (60 + WeightMirror.RANDOM_WORK)
    break_even = WeightMirror.moment_work(layer) / per_sample
    assert rule._uses_moments(layer, 2 * break_even) and not rule._uses_moments(layer, break_even / 2)
    assert not WeightMirror(response="layer")._uses_moments(layer, 100 * break_even)
    assert not WeightMirror(estimator="samples")._uses_moments(layer, 100 * break_even)
    assert WeightMirror(estimator="moments")._uses_moments(layer, 1.0)


def test_moments_need_the_linear_response():
    from weightmirror.circuits.rules import RuleError

    with pytest.raises(RuleError, match="estimator = 'moments' needs response = 'linear'"):
        WeightMirror(estimator="moments", response="layer")
    with pytest.raises(RuleError, match="estimator"):
        WeightMirror(estimator="exact")


@pytest.mark.parametrize("pool", [1, 4, 10])
def test_pooled_draws_follow_the_closed_form(pool):
    """Draws every ``k`` steps (decay ``1-(1-λ)^k``, ``k m`` samples, the current W) on a W
    that moves by ``d`` per step: ``ε² = F λ/(2m) + (d/λ)² + (k²-1) d²/12``, the lag no
    larger than drawing every step."""
    rng = np.random.default_rng(14)
    layer = _layer(rng)
    layer.B = layer.W.copy()
    decay, samples, drift = 0.01, 2000, 5e-4
    direction = rng.standard_normal(layer.W.shape).astype(np.float32)
    direction /= np.linalg.norm(direction)
    rule = WeightMirror(noise="uniform")
    errors = []
    for t in range(int(40 / decay)):  # about 35 independent stretches of B's noise after the start
        layer.W += direction * (drift * np.linalg.norm(layer.W))  # a relative drift d per step
        if (t + 1) % pool == 0:
            lam = 1 - (1 - decay) ** pool
            rule.mirror_update(layer, np, rng, lam, lam, 0, moments=pool * samples)
        if t > 5 / decay:
            errors.append(float(np.sum((layer.B - layer.W) ** 2) / np.sum(layer.W ** 2)))
    predicted = WeightMirror.predicted_error(300, decay, samples, drift, pool_steps=pool)
    assert math.sqrt(np.mean(errors)) == pytest.approx(predicted, rel=0.06)
    assert (drift / decay) ** 2 > 0.5 * predicted ** 2  # the lag is most of it: a stale B would show


def test_the_adaptive_mirror_pools_its_draws():
    """With moment draws, one draw per ``k = ⌊1/λ⌋`` steps (at most ``max_pool_steps``), and B
    still within its target."""
    rng = np.random.default_rng(15)
    rule = WeightMirror(estimator="moments", target_angle=8.0, lag_angle=1.0, plan_every=10)
    assert rule.max_pool_steps == 100 and WeightMirror(max_pool_steps=5).pool_steps(0.01) == 5
    assert [rule.pool_steps(x) for x in (0.5, 0.3, 0.1, 0.02, 0.005, 0.0)] == [2, 3, 10, 50, 100, 100]
    layer = _layer(rng)
    rule.initial_phase([layer], np, rng)
    draws = []
    real = rule.mirror_update

    def counting(*args, **kwargs):
        draws.append(kwargs.get("moments", 0))
        real(*args, **kwargs)

    object.__setattr__(rule, "mirror_update", counting)
    direction = rng.standard_normal(layer.W.shape).astype(np.float32)
    for step in range(200):
        delta = direction * (5e-3 * np.linalg.norm(layer.W) / np.linalg.norm(direction))
        layer.W += delta
        rule.after_weight_update(layer, delta, 1.0, np)
        rule.after_step([layer], np, rng, Progress(step, 0.0, 1.0))
    k = layer._mirror_draw[0]
    assert 1 < k < 20 and layer._mirror_draw == (k, True)
    assert len(draws) == pytest.approx(200 / k, abs=3) and all(d > 0 for d in draws)
    assert angle_degrees(layer.B, layer.W) < 8.0 * 1.25


def test_a_cost_budget_pools_moment_draws_over_more_steps():
    rng = np.random.default_rng(16)
    layers = [_layer(rng, out=200, fan_in=300), _layer(rng, out=10, fan_in=200)]
    rule = WeightMirror(target_angle=5.0, max_cost=0.05, estimator="moments")
    for layer in layers:
        layer.B = layer.W.copy()
        rule.prepare_layer(layer, np)
        step = np.full_like(layer.W, 0.01) * np.linalg.norm(layer.W) / math.sqrt(layer.W.size)
        rule.after_weight_update(layer, step, 1.0, np)
    rule.after_step(layers, np, rng, Progress(0, 0.0, 1.0, samples_per_step=32))
    work = sum(WeightMirror.moment_work(l) / l._mirror_draw[0] for l in layers)
    budget = 0.05 * 32 * sum(WeightMirror._work(l)[1] for l in layers)
    assert work <= budget * (1 + 1e-9)
    assert all(l._mirror_draw[0] > rule.pool_steps(l._mirror_plan[0]) for l in layers)


@pytest.mark.parametrize("decay, pool", [(0.5, 2), (0.3, 3), (0.1, 10), (0.04, 25)])
def test_pooled_draws_keep_the_planned_lag(decay, pool):
    """Draws every ``k`` steps at the decay ``λ'`` of ``pooled_decay`` lag a W that moves by ``d``
    per step as much, on average over the steps, as draws every step at ``λ`` (``(1-λ)/λ · d``),
    where ``λ`` itself would lag 9-17 % more."""
    d = 1e-3
    fast = WeightMirror.pooled_decay(decay, pool)
    assert fast > decay
    for lam, expected in ((fast, (1 - decay) / decay), (decay, None)):
        lam_k = 1 - (1 - lam) ** pool
        w = b = 0.0  # one coordinate, no noise: B's lag behind W
        lags = []
        for t in range(int(60 / decay)):
            w += d
            if (t + 1) % pool == 0:
                b = (1 - lam_k) * b + lam_k * w
            if t > 30 / decay:
                lags.append((w - b) / d)
        measured = float(np.mean(lags))
        assert measured == pytest.approx(WeightMirror.pooled_lag(lam, pool), rel=0.01)
        if expected is not None:
            assert measured == pytest.approx(expected, rel=0.01)
        else:
            assert measured > 1.08 * (1 - decay) / decay
