"""The Python API: run, read back and compose, from a notebook or a script.

Three calls cover what the command line does::

    import weightmirror as wm

    run = wm.train(rule="kp", data="digits", epochs=3, optim={"lr": 0.01})
    run.summary["test_top1_error"], run.metrics[-1]["angles_deg"]

    circuit = wm.simulate(layers=[64, 32, 10], rule="wm", phases={"duration": "1s"})
    circuit.summary["angles_deg"]

    again = wm.load_run("runs/kp")          # any results folder, training or circuit

Keyword overrides are in config-key form, exactly as in a TOML file
(``optim={"lr": 0.01}`` is ``[optim] lr = 0.01``); ``out=None`` keeps the
run in memory, ``out="DIR"`` writes the same results folder as the command
line. Bad input raises :class:`weightmirror.errors.InputError` with the
message the command line would print; a training run whose loss or weights
stop being finite raises :class:`weightmirror.sims.training.DivergedError`
(``weightmirror.DivergedError``), whose ``run`` is the run as far as it was
finite (``run.summary["status"] == "diverged"``).

To go further than a run, :func:`build_circuit` hands back the Brian2
network of a circuit before it runs (add monitors or populations of your
own), and the building blocks of rate mode (data sets, models, rules,
optimiser) are named in :mod:`weightmirror` (see its ``__all__``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .results import Run

__all__ = ["train", "simulate", "load_run", "build_circuit", "Run"]


def _values(config, read, to_dict) -> dict[str, Any]:
    """A config given as None, a TOML path, a mapping or a config object, as plain values."""
    if config is None:
        return {}
    if isinstance(config, (str, Path)):
        return read(config)
    if isinstance(config, Mapping):
        return dict(config)
    return to_dict(config)


def train(config=None, *, out: str | Path | None = None, progress: bool = True, dataset=None,
          **overrides: Any) -> Run:
    """Train one rule on one data set and return the run.

    Parameters
    ----------
    config : None, str/Path, mapping or TrainConfig
        The defaults (None), a TOML file, values in config-key form, or a
        :class:`weightmirror.sims.config.TrainConfig`.
    out : str, Path or None
        A results folder to write (it must not hold a run), or None to keep
        everything in memory.
    progress : bool
        Progress bar and one line per epoch.
    dataset : Dataset, optional
        Data already loaded (:func:`weightmirror.load_dataset`), e.g. to
        train several rules on one copy (it must be the configured ``data``).
    **overrides
        Config keys on top of ``config``: ``rule="kp"``, ``data="digits"``, ``epochs=3``,
        ``optim={"lr": 0.01}``, ``model_options={"hidden": [128]}`` ...

    Returns
    -------
    Run
        ``config`` (every key, resolved), ``metrics`` (one dict per epoch,
        epoch 0 = before training), ``summary`` (``status``: ``"completed"``)
        and ``path``.

    Raises
    ------
    InputError
        A config key or value, the data, or ``out`` cannot be used.
    DivergedError
        The loss or the weights stopped being finite: training stopped at
        once. ``exc.run`` holds the finite metrics rows and the summary
        (``status`` ``"diverged"``, ``diverged``: epoch, step, loss, what,
        layer), as written to ``out``; ``exc.checkpoint`` the last finite
        checkpoint kept (None if none); ``str(exc)`` says what to try.
    """
    from .sims.config import TrainConfig, read_file, resolve
    from .sims.training import train as train_run

    cfg = resolve(_values(config, read_file, TrainConfig.to_dict), overrides)
    return train_run(cfg, out, progress=progress, log=print if progress else (lambda s: None), data=dataset)


def simulate(circuit_config=None, *, out: str | Path | None = None, progress: bool = True,
             data_dir: str | Path | None = None, init_from: str | Path | None = None, **overrides: Any) -> Run:
    """Run a circuit in Brian2 (circuit mode) and return the run.

    Parameters
    ----------
    circuit_config : None, str/Path, mapping or CircuitSpec
        The declaration: defaults (None), a TOML file (``weightmirror config
        --example circuit``), values in config-key form, or a
        :class:`weightmirror.circuits.spec.CircuitSpec`.
    out : str, Path or None
        A results folder to write, or None to keep the run in memory.
    progress : bool
        A progress bar in simulated seconds.
    data_dir : folder of the data files for engaged phases (default: the data set's own).
    init_from : a results folder (a training run of an MLP or a circuit run) whose W and B start the
        circuit, as ``weightmirror circuit --init-from``; without ``layers``, the circuit of that
        network. A training run's biases are carried unchanged to the circuit's weights (not simulated).
    **overrides
        Declaration keys on top: ``layers=[64, 32, 10]``, ``rule="kp"`` (or
        ``rule={"name": "wm", "lr": 0.05}``), ``neuron={"kind": "spiking"}``,
        ``phases={"schedule": "engaged", "duration": "2s"}``, ``device="cpp"`` ...

    Returns
    -------
    Run
        ``config`` (the declaration), ``metrics`` (one dict per simulated
        interval), ``summary`` and ``path``.
    """
    from .sims import circuit

    file_values = _values(circuit_config, circuit.read_file, lambda s: s.to_dict())
    spec, source = circuit.resolve_from_weights(file_values, overrides, init_from)
    weights, biases = (None, None) if source is None else (source.layers, source.biases)
    return circuit.simulate(spec, out, progress=progress, data_dir=data_dir, weights=weights, biases=biases)


def build_circuit(circuit_config=None, *, weights=None, stimulus=None, directory: str | None = None,
                  **overrides: Any):
    """Build a circuit's Brian2 network without running it.

    Returns a :class:`weightmirror.circuits.brian.network.BrianCircuit`:
    ``.net`` is its ``brian2.Network``; ``.Y[l]`` and ``.D[l]`` the forward
    and feedback populations of layer ``l`` (``NeuronGroup``); ``.S_W[l-1]``
    and ``.S_B[l-1]`` the synapses of W_l and B_l. Add monitors or
    populations of your own to ``.net``, then run it phase by phase with
    ``.run_phase("mirror", 0.5)`` (seconds) and read the weights with
    ``.get_weights()``. Call ``.release()`` when done (standalone devices).

    Parameters
    ----------
    circuit_config, **overrides : as for :func:`simulate`.
    weights : ``[(W_l, B_l)]`` NumPy arrays in W's layout (e.g. from a rate-mode
        run); default: drawn from the declaration's seed.
    stimulus : ``(x, labels)`` for engaged phases, one row per presentation.
    directory : build directory for standalone devices.
    """
    from .circuits.brian.network import BrianCircuit
    from .sims import circuit

    spec = circuit.resolve_spec(_values(circuit_config, circuit.read_file, lambda s: s.to_dict()), overrides)
    return BrianCircuit(spec, weights=weights, stimulus=stimulus, directory=directory)


def load_run(path: str | Path) -> Run:
    """Read a results folder (training or circuit) into a :class:`Run`.

    Raises :class:`weightmirror.results.ResultsError` when ``path`` is not a
    results folder; files missing from a run that has not finished are
    listed in ``run.problems``.
    """
    from .results import load_run as read

    return read(path, strict=True)
