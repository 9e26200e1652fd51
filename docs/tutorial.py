# %% [markdown]
# # weightmirror from Python: a short tutorial
#
# Run it as a script (`python docs/tutorial.py`, a few minutes on two cores)
# or cell by cell in a notebook (the `# %%` markers are Jupyter/VS Code cells).
# Everything here uses the embedded digits data: no download. The test suite
# runs this file (`tests/test_tutorial.py`), so it stays true to the API.
#
# Three calls do what the command line does — `wm.train`, `wm.simulate`,
# `wm.load_run` — and the building blocks underneath are named in
# `weightmirror` too, for when you want to write the loop yourself.

# %%
import tempfile
from pathlib import Path

import numpy as np

import weightmirror as wm

workdir = Path(tempfile.mkdtemp(prefix="weightmirror-tutorial-"))
print("weightmirror", wm.__version__, "writing to", workdir)

# %% [markdown]
# ## 1. Train one rule, in memory
# Keyword arguments are config keys, as in a TOML file: `optim={"lr": 0.02}`
# is `[optim] lr = 0.02`. `out=None` (the default) keeps the run in memory.

# %%
run = wm.train(rule="kp", data="digits", epochs=3, batch_size=32,
               model_options={"hidden": [64]}, optim={"lr": 0.02}, progress=False)
print(run)
print("test error (%):", round(run.summary["test_top1_error"], 2))
print("angle(B, W^T) per layer, bottom up (deg):", [round(a, 1) for a in run.summary["angles_deg"]])
# the input layer's B carries no error to any layer: its angle is shown, but
# only the layers above it send errors down
epochs = [row["epoch"] for row in run.metrics]
print("metrics rows for epochs", epochs)

# %% [markdown]
# ## 2. Several rules on the same data, with a results folder each
# Load the data once and hand it to every run. With `out=...` each run
# writes the same results folder as `weightmirror train` does.

# %%
data = wm.load_dataset("digits", flatten=True, seed=0)
runs = {}
for rule in ("bp", "fa", "wm", "kp"):
    runs[rule] = wm.train(rule=rule, epochs=3, batch_size=32, model_options={"hidden": [64]},
                          optim={"lr": 0.02}, dataset=data, out=workdir / "compare" / rule, progress=False)
for rule, r in runs.items():
    print(f"{rule:3s} error {r.summary['test_top1_error']:5.2f} %   top-layer angle "
          f"{r.summary['angles_deg'][-1]:5.1f} deg")

# %% [markdown]
# Read a folder back (any results folder, training or circuit), and look at
# the metrics as a table (needs pandas: `pip install 'weightmirror[pandas]'`).

# %%
again = wm.load_run(workdir / "compare" / "wm")
assert again.metrics == runs["wm"].metrics
try:
    frame = again.to_dataframe()
except wm.InputError as exc:  # pandas is not installed
    print(exc)
else:
    print(frame[["epoch", "test_top1_error", "angles_deg[0]", "angles_deg[1]"]])

# %% [markdown]
# Figures are made from saved results only (never by retraining):

# %%
from weightmirror.figures.make import make_all  # noqa: E402

report = make_all([workdir / "compare"], workdir / "figures")
print("figures:", [Path(p).name for p in report["made"]])

# %% [markdown]
# ## 3. The same thing by hand: network, rule, optimiser, mirror
# `build_model` builds a network whose weight layers hold W, b and B and ask
# the rule for the feedback; the optimiser hands the rule its update (KP);
# the weight mirror learns B in its own mirror mode (`initial_phase`,
# `after_step`). Nothing here is hidden in the trainer.

# %%
xp = wm.get_array_module("cpu")
rng = wm.make_rng(xp, 0)
rule = wm.make_rule("wm")  # the adaptive mirror: its rate follows how fast each W moves
net = wm.build_model("mlp", data.image_shape, data.num_classes, rule, xp, rng, hidden=[64])
opt = wm.SGD(net.parameter_modules(), rule, xp, momentum=0.9, weight_decay=1e-4)
rule.initial_phase(net.weight_layers, xp, rng)  # the mirror before training
print("after the initial mirror phase:", [round(wm.angle_degrees(l.B, l.W), 1) for l in net.weight_layers])
for epoch in range(3):
    order = np.random.default_rng(epoch).permutation(len(data.y_train))
    for start in range(0, len(order) - 31, 32):
        idx = order[start:start + 32]
        logits = net.forward(data.x_train[idx], train=True)
        loss, dlogits = wm.softmax_cross_entropy(logits, data.y_train[idx], xp)
        net.backward(dlogits, rng=rng)      # errors travel down through B, not W^T
        opt.step(0.02)                       # W <- W - lr * (delta y^T), with momentum
        rule.after_step(net.weight_layers, xp, rng)  # mirror mode: B learns from noise
    error = float(np.mean(net.forward(data.x_test, train=False).argmax(axis=1) != data.y_test)) * 100
    angles = [round(wm.angle_degrees(l.B, l.W), 1) for l in net.weight_layers]
    print(f"epoch {epoch + 1}: test error {error:.1f} %, angle(B, W^T) {angles} deg")

# %% [markdown]
# ## 4. Circuit mode: the mirror phase in Brian2
# The same weight mirror as explicit neuron populations: each layer's
# neurons fire noise in turn, the feedback synapses learn by a Hebbian
# product. `simulate` takes the circuit declaration's keys.

# %%
circuit = wm.simulate(layers=[64, 32, 10], rule="wm", phases={"duration": "0.4s"}, progress=False)
print("circuit angles after 0.4 s:", [round(a, 1) for a in circuit.summary["angles_deg"]],
      "rate-mode prediction:", [round(a, 1) for a in circuit.summary["predicted_angles_deg"]])
weights = circuit.load_arrays("weights_final")  # W1, B1, W2, B2 in W's layout
print("weight arrays:", sorted(weights))

# %% [markdown]
# ## 5. Your own monitors on the Brian2 network
# `build_circuit` builds the network without running it: `.net` is the
# `brian2.Network`, `.Y[l]`/`.D[l]` the forward/feedback populations of
# layer l, `.S_W`/`.S_B` the synapses. Add what you like, then run phases.

# %%
from brian2 import StateMonitor  # noqa: E402

built = wm.build_circuit(layers=[16, 8, 4], rule="wm", phases={"duration": "0.1s"})
monitor = StateMonitor(built.Y[1], "v", record=[0, 1, 2])
built.net.add(monitor)
built.run_phase("mirror", 0.1)
built.release()
print("recorded", monitor.v.shape[1], "steps of layer 1's membrane variable; std",
      round(float(np.std(monitor.v[:])), 3))
