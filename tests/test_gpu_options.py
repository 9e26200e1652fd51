"""The GPU options: one frozen object, put in force only by a ``with`` block.

``use_gpu_options`` must restore every field (and cuBLAS's compute type,
checked here with a stand-in for CuPy) after a normal exit and after an
exception, nested blocks must unwind in order, and a bad value must raise
``BackendError`` naming the allowed values before anything changes. The
readers (``fused.active``, training) must see the options in force.
"""
import dataclasses
import types
import warnings

import numpy as np
import pytest

from weightmirror.errors import InputError
from weightmirror.models import backend, fused
from weightmirror.models.backend import (CONV_ALGORITHMS, PLAN_SEARCHES, BackendError, GPUOptions, gpu_options,
                                         use_gpu_options)

CHANGED = dict(tf32=True, conv_algorithm="cudnn", plan_search="heuristic", fused=False)


class Boom(Exception):
    pass


def test_defaults_and_owned_name_lists():
    assert gpu_options() == GPUOptions() == GPUOptions(False, "auto", "measure", True)
    assert CONV_ALGORITHMS == ("auto", "im2col", "cudnn")
    assert set(PLAN_SEARCHES) == {"heuristic", "measure"}
    assert backend.DEVICES == ("cpu", "cuda")
    with pytest.raises(dataclasses.FrozenInstanceError):
        gpu_options().tf32 = True


def test_every_field_is_restored_after_a_normal_exit():
    before = gpu_options()
    with use_gpu_options(**CHANGED) as inside:
        assert inside == gpu_options() == GPUOptions(**CHANGED)
    assert gpu_options() == before == GPUOptions()


def test_every_field_is_restored_after_an_exception():
    with pytest.raises(Boom):
        with use_gpu_options(**CHANGED):
            assert gpu_options() == GPUOptions(**CHANGED)
            raise Boom()
    assert gpu_options() == GPUOptions()


@pytest.mark.parametrize("field,value", sorted(CHANGED.items()))
def test_each_field_alone(field, value):
    with use_gpu_options(**{field: value}):
        assert getattr(gpu_options(), field) == value
        # the others keep their values
        assert dataclasses.replace(gpu_options(), **{field: getattr(GPUOptions(), field)}) == GPUOptions()
    assert gpu_options() == GPUOptions()


def test_nested_contexts_restore_in_order():
    seen = []
    with use_gpu_options(tf32=True):
        seen.append(gpu_options())
        with use_gpu_options(conv_algorithm="im2col"):
            seen.append(gpu_options())
            with pytest.raises(Boom):
                with use_gpu_options(fused=False, conv_algorithm="cudnn"):
                    seen.append(gpu_options())
                    raise Boom()
            seen.append(gpu_options())
        seen.append(gpu_options())
    seen.append(gpu_options())
    one = GPUOptions(tf32=True)
    two = GPUOptions(tf32=True, conv_algorithm="im2col")
    three = GPUOptions(tf32=True, conv_algorithm="cudnn", fused=False)
    assert seen == [one, two, three, two, one, GPUOptions()]


def test_a_whole_options_object_and_changes_on_top_of_it():
    base = GPUOptions(plan_search="heuristic", fused=False)
    with use_gpu_options(tf32=True):
        with use_gpu_options(base, conv_algorithm="im2col") as inside:
            # an explicit object replaces the options in force (tf32 back to False)
            assert inside == GPUOptions(plan_search="heuristic", fused=False, conv_algorithm="im2col")
        with use_gpu_options() as same:
            assert same == GPUOptions(tf32=True)
        assert gpu_options() == GPUOptions(tf32=True)
    assert gpu_options() == GPUOptions()
    with pytest.raises(TypeError, match="expected GPUOptions"):
        with use_gpu_options({"tf32": True}):
            pass


@pytest.mark.parametrize("field,value,allowed", [
    ("conv_algorithm", "winograd", "allowed: auto, im2col, cudnn"),
    ("plan_search", "exhaustive", "allowed: heuristic, measure"),
    ("tf32", "yes", "expected true/false"),
    ("fused", 1, "expected true/false"),
])
def test_a_bad_value_raises_backend_error_naming_the_allowed_values(field, value, allowed):
    with pytest.raises(BackendError, match=f"GPU option {field}: .*{allowed}"):
        GPUOptions(**{field: value})
    with use_gpu_options(tf32=True):
        with pytest.raises(BackendError, match=allowed):
            with use_gpu_options(**{field: value}):
                pytest.fail("the block must not run")  # pragma: no cover
        assert gpu_options() == GPUOptions(tf32=True)  # nothing changed
    assert issubclass(BackendError, InputError)


def test_an_unknown_option_names_the_allowed_ones():
    with pytest.raises(BackendError, match="unknown GPU option 'cudnn_benchmark'; allowed: tf32, conv_algorithm, "
                                           "plan_search, fused"):
        with use_gpu_options(cudnn_benchmark=True):
            pass  # pragma: no cover
    assert gpu_options() == GPUOptions()


class FakeLinalg:
    """Stands in for ``cupy._core._routines_linalg``: one float32 compute type."""

    COMPUTE_TYPE_DEFAULT = 1
    COMPUTE_TYPE_PEDANTIC = 2
    COMPUTE_TYPE_TF32 = 7

    def __init__(self, start):
        self.value = start
        self.calls = []

    def get_compute_type(self, dtype):
        assert dtype is np.float32
        return self.value

    def set_compute_type(self, dtype, kind):
        assert dtype is np.float32
        self.calls.append(kind)
        self.value = kind


@pytest.fixture
def cublas(monkeypatch):
    linalg = FakeLinalg(FakeLinalg.COMPUTE_TYPE_PEDANTIC)  # a type set by someone else
    monkeypatch.setattr(backend, "_cublas", lambda: (types.SimpleNamespace(float32=np.float32), linalg))
    return linalg


def test_cublas_compute_type_is_set_and_restored(cublas):
    with use_gpu_options(tf32=True):
        assert cublas.value == FakeLinalg.COMPUTE_TYPE_TF32
        with use_gpu_options(tf32=False):
            assert cublas.value == FakeLinalg.COMPUTE_TYPE_DEFAULT
        assert cublas.value == FakeLinalg.COMPUTE_TYPE_TF32
        with pytest.raises(Boom):
            with use_gpu_options(tf32=False):
                raise Boom()
        assert cublas.value == FakeLinalg.COMPUTE_TYPE_TF32
    # the type in force before the first block, whatever it was
    assert cublas.value == FakeLinalg.COMPUTE_TYPE_PEDANTIC


def test_a_bad_value_leaves_the_compute_type_alone(cublas):
    with pytest.raises(BackendError):
        with use_gpu_options(tf32=True, conv_algorithm="fft"):
            pass  # pragma: no cover
    assert cublas.calls == [] and cublas.value == FakeLinalg.COMPUTE_TYPE_PEDANTIC


# -- readers -------------------------------------------------------------------
FAKE_CUPY = types.SimpleNamespace(__name__="cupy")


@pytest.fixture
def fresh_fused(monkeypatch):
    """A process in which no fused kernel has failed yet."""
    monkeypatch.setattr(fused, "_STATE", {"failure": None})


def test_fused_active_reads_the_option_in_force(fresh_fused):
    assert not fused.active(np)
    assert fused.active(FAKE_CUPY)
    with use_gpu_options(fused=False):
        assert not fused.active(FAKE_CUPY)
    assert fused.active(FAKE_CUPY)


def test_a_kernel_failure_switches_fused_off_for_the_process_with_one_warning(fresh_fused):
    with pytest.warns(RuntimeWarning, match="fused GPU kernels switched off.*CompileError: nvrtc"):
        fused.record_failure(type("CompileError", (Exception,), {})("nvrtc"))
    assert fused.failure() == "CompileError: nvrtc"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second failure is silent and keeps the first reason
        fused.record_failure(RuntimeError("later"))
    assert fused.failure() == "CompileError: nvrtc"
    # no option turns the kernels back on: the failure is a fact, not a setting
    with use_gpu_options(fused=True):
        assert not fused.active(FAKE_CUPY)
    assert gpu_options() == GPUOptions()


def test_training_runs_under_the_configured_options_and_restores_them(tmp_path, monkeypatch):
    from weightmirror.models.layers import Network
    from weightmirror.sims import config
    from weightmirror.sims.training import train

    seen = []
    forward = Network.forward

    def spy(self, x, train=True):
        seen.append(gpu_options())
        return forward(self, x, train)

    monkeypatch.setattr(Network, "forward", spy)
    cfg = config.resolve({"epochs": 1, "batch_size": 256, "model_options": {"hidden": [16]},
                          "run": {"tf32": True, "conv_algorithm": "im2col"}})
    train(cfg, tmp_path / "run", progress=False)
    assert seen and set(seen) == {GPUOptions(tf32=True, conv_algorithm="im2col")}
    assert gpu_options() == GPUOptions()
