"""The Python API (weightmirror.train / simulate / load_run / build_circuit) against the command line."""
from __future__ import annotations

import json
import tomllib

import pytest

import weightmirror as wm
from weightmirror import results
from weightmirror.errors import InputError
from weightmirror.sims.cli import main

SMALL = {"epochs": 2, "batch_size": 64, "seed": 3, "model_options": {"hidden": [24]},
         "wm": {"initial_mirror_steps": 40}}


def _without_times(rows):
    return [{k: v for k, v in r.items() if k not in ("epoch_seconds",)} for r in rows]


def test_train_in_memory_equals_the_command_line_run(tmp_path):
    """train(out=None) gives the metrics the CLI writes for the same config and seed, and writes nothing."""
    config = tmp_path / "small.toml"
    config.write_text("epochs = 2\nbatch_size = 64\nseed = 3\n[model_options]\nhidden = [24]\n"
                      "[wm]\ninitial_mirror_steps = 40\n")
    assert main(["train", "--rule", "wm", "--config", str(config), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    before = set(tmp_path.iterdir())
    run = wm.train(rule="wm", progress=False, **SMALL)
    assert set(tmp_path.iterdir()) == before  # nothing written
    assert run.path is None and run.kind == "train"
    written = results.read_metrics(tmp_path / "cli" / results.METRICS)
    assert _without_times(run.metrics) == _without_times(written)
    summary = json.loads((tmp_path / "cli" / results.SUMMARY).read_text())
    assert run.summary["test_top1_error"] == summary["test_top1_error"]
    assert run.summary["angles_deg"] == summary["angles_deg"]
    assert run.config == results.read_config(tmp_path / "cli")


def test_train_takes_a_file_a_mapping_or_a_config_with_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("rule = 'fa'\nepochs = 1\n[model_options]\nhidden = [8]\n")
    from_file = wm.train(path, progress=False, epochs=1, seed=1)
    from_dict = wm.train({"rule": "fa", "epochs": 1, "model_options": {"hidden": [8]}}, progress=False, seed=1)
    cfg = wm.TrainConfig.from_file(path)
    from_object = wm.train(cfg, progress=False, seed=1)
    assert from_file.config["rule"] == "fa" and from_file.config["seed"] == 1
    assert _without_times(from_file.metrics) == _without_times(from_dict.metrics) == _without_times(from_object.metrics)


def test_train_writes_the_results_folder_and_load_run_reads_it(tmp_path):
    run = wm.train(rule="kp", label="kp-test", progress=False, out=tmp_path / "kp", **SMALL)
    back = wm.load_run(tmp_path / "kp")
    assert back.kind == "train" and back.path == tmp_path / "kp"
    assert back.label == "kp-test" == run.summary["label"] and back.rule == "kp"
    assert back.metrics == results.read_metrics(tmp_path / "kp" / results.METRICS)
    assert back.summary["test_top1_error"] == run.summary["test_top1_error"]
    assert back.config["label"] == "kp-test" and back.problems == {}


def test_bad_overrides_are_input_errors_that_name_the_key():
    with pytest.raises(InputError, match="unknown config key 'learning_rate'"):
        wm.train(learning_rate=0.1, progress=False)
    with pytest.raises(InputError, match="optim.lr: must be > 0"):
        wm.train(optim={"lr": -1.0}, progress=False)
    with pytest.raises(InputError, match="finite"):
        wm.train(wm={"sigma": float("inf")}, progress=False)


def test_load_run_refuses_what_is_not_a_results_folder(tmp_path):
    with pytest.raises(results.ResultsError, match="no such results folder"):
        wm.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(results.ResultsError, match="not a results folder"):
        wm.load_run(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(results.ResultsError, match="a file, not a results folder"):
        wm.load_run(tmp_path / "notes.txt")


def test_an_interrupted_run_loads_with_its_problem_named(tmp_path):
    from weightmirror.sims.config import resolve
    from weightmirror.sims.training import train

    train(resolve({**SMALL, "rule": "bp"}), tmp_path / "part", progress=False, stop_after=1)
    run = wm.load_run(tmp_path / "part")
    assert run.kind == "train" and run.summary is None
    assert [r["epoch"] for r in run.metrics] == [0, 1]
    assert "did not finish" in run.problems["summary"] and "--resume" in run.problems["summary"]


def test_to_dataframe_spreads_lists_over_columns():
    pd = pytest.importorskip("pandas")
    run = wm.train(rule="fa", progress=False, **SMALL)
    frame = run.to_dataframe()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["epoch"]) == [0, 1, 2]
    assert frame["angles_deg[1]"].tolist() == [r["angles_deg"][1] for r in run.metrics]
    assert frame["test_top1_error"].iloc[-1] == run.summary["test_top1_error"]


def test_simulate_in_memory_equals_a_written_circuit_run(tmp_path):
    kwargs = dict(layers=[8, 6, 4], rule={"name": "wm", "lr": 0.1, "decay": 0.1}, progress=False,
                  phases={"duration": "100ms", "record_interval": "50ms"}, seed=2, label="tiny")
    memory = wm.simulate(**kwargs)
    folder = wm.simulate(out=tmp_path / "c", **kwargs)
    assert memory.path is None and memory.kind == "circuit"
    assert memory.summary["angles_deg"] == folder.summary["angles_deg"]
    assert memory.summary["label"] == "tiny"
    back = wm.load_run(tmp_path / "c")
    assert back.kind == "circuit" and back.label == "tiny"
    assert [r["t"] for r in back.metrics] == [r["t"] for r in memory.metrics]
    w_memory, w_folder = memory.load_arrays("weights_final"), back.load_arrays("weights_final")
    assert sorted(w_memory) == ["B1", "B2", "W1", "W2"]
    for key in w_memory:
        assert (w_memory[key] == w_folder[key]).all()
    with pytest.raises(results.ResultsError, match="weights_final"):
        results.Run(path=None, kind="circuit").load_arrays("weights_final")


def test_build_circuit_gives_the_brian2_network_before_it_runs():
    brian2 = pytest.importorskip("brian2")
    circuit = wm.build_circuit(layers=[6, 4, 3], phases={"duration": "20ms"})
    try:
        assert isinstance(circuit.net, brian2.Network)
        assert [len(g) for g in circuit.Y] == [6, 4, 3] and [len(g) for g in circuit.D] == [6, 4, 3]
        assert len(circuit.S_W) == len(circuit.S_B) == 2
        monitor = brian2.StateMonitor(circuit.Y[1], "v", record=True)
        circuit.net.add(monitor)
        circuit.run_phase("mirror", 0.02)
        assert monitor.v.shape == (4, 40)  # 20 ms at dt = 0.5 ms
    finally:
        circuit.release()


def test_version_and_example_configs(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"weightmirror {wm.__version__}"
    from weightmirror.sims import circuit, config

    for kind in ("train", "circuit"):
        assert main(["config", "--example", kind]) == 0
        text = capsys.readouterr().out
        assert text.count("\n") > 30 and "#" in text  # commented
        values = tomllib.loads(text)
        if kind == "train":  # the example is the defaults, every key written out
            assert config.resolve(values) == config.TrainConfig()
            assert set(values) == set(config.TrainConfig().to_dict())
        else:
            assert circuit.resolve_spec(values) == circuit.resolve_spec({})


def test_lazy_top_level_names_resolve():
    for name in wm.__all__:
        assert getattr(wm, name) is not None, name
    with pytest.raises(AttributeError):
        wm.no_such_name  # noqa: B018
