"""Tests for sims.distributed.

The two-rank test launches ``mpirun -n 2 python -m tests.test_distributed``:
this file is also the script each rank runs (see ``_rank_main`` at the
bottom).  It is skipped, with the reason, where mpirun or mpi4py is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from weightmirror.sims.distributed import (
    Communicator,
    MPICommunicator,
    NCCLCommunicator,
    SingleProcess,
    average_gradients,
    get_communicator,
    rank_seed,
    shard_indices,
)

REPO = Path(__file__).resolve().parents[1]

# The fixed problem both the ranks and the single-process reference solve.
SIZES = [12, 16, 10, 5]
BATCH = 8
SEED = 3


def _problem():
    rng = np.random.default_rng(100)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    return x, y


def _grads(x, y):
    """Build the MLP (same weights on every rank), backprop on (x, y)."""
    from weightmirror.circuits.rules import make_rule
    from weightmirror.models.layers import softmax_cross_entropy
    from weightmirror.models.mlp import build_mlp

    net = build_mlp(SIZES, make_rule("bp"), np, np.random.default_rng(SEED))
    logits = net.forward(x)
    _, dlogits = softmax_cross_entropy(logits, y, np)
    net.backward(dlogits)
    return net


def _grad_dict(net) -> dict[str, np.ndarray]:
    out = {}
    for i, m in enumerate(net.parameter_modules()):
        for name, g in m.grads.items():
            out[f"{i}.{name}"] = np.array(g)
    return out


# --------------------------------------------------------------------------
# single-process parts
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n,size", [(8, 2), (7, 2), (10, 3), (2, 4), (0, 3)])
def test_shard_indices_cover_the_batch_once(n, size):
    shards = [shard_indices(n, r, size) for r in range(size)]
    got = np.concatenate([np.arange(n)[s] for s in shards])
    assert got.tolist() == list(range(n))
    lengths = [s.stop - s.start for s in shards]
    assert max(lengths) - min(lengths) <= 1


def test_shard_indices_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        shard_indices(8, 2, 2)


def test_rank_seed_differs_by_rank_and_is_reproducible():
    seeds = [rank_seed(7, r) for r in range(4)]
    assert len(set(seeds)) == 4
    assert seeds == [rank_seed(7, r) for r in range(4)]
    assert rank_seed(8, 0) != seeds[0]
    assert all(0 <= s < 2**63 for s in seeds)
    a = np.random.default_rng(seeds[0]).standard_normal(5)
    b = np.random.default_rng(seeds[1]).standard_normal(5)
    assert not np.allclose(a, b)


def test_single_process_is_a_no_op_and_checks_dtypes():
    comm = SingleProcess()
    assert (comm.rank, comm.size, comm.is_root) == (0, 1, True)
    a = np.arange(4, dtype=np.float32)
    comm.allreduce_mean([a])
    comm.bcast([a])
    assert a.tolist() == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="float"):
        comm.allreduce_mean([np.arange(3)])
    assert isinstance(get_communicator("single"), SingleProcess)
    with pytest.raises(ValueError, match="allowed"):
        get_communicator("gloo")


class _FakeTwoRanks(Communicator):
    """Averages with a fixed 'other rank' buffer; records the calls."""

    rank, size = 0, 2

    def __init__(self, other: list[np.ndarray]):
        self.other = other
        self.calls = []

    def allreduce_mean(self, arrays):
        self.calls.append([a.shape for a in arrays])
        for a, b in zip(arrays, self.other):
            a += b
            a /= 2

    def bcast(self, arrays, root=0):  # pragma: no cover - unused
        pass


def test_average_gradients_one_collective_per_dtype_and_in_place():
    net_a = _grads(*_problem())
    before = _grad_dict(net_a)
    refs = {k: id(g) for k, g in ((k, g) for i, m in enumerate(net_a.parameter_modules())
                                   for k, g in m.grads.items())}
    # the "other rank" holds twice the gradients: the mean is 1.5x
    flat_other = np.concatenate(
        [2 * m.grads[n].reshape(-1) for m in net_a.parameter_modules() for n in sorted(m.params)]
    )
    comm = _FakeTwoRanks([flat_other])
    average_gradients(comm, net_a)
    assert len(comm.calls) == 1, "one collective for a float32 network"
    after = _grad_dict(net_a)
    for k in before:
        np.testing.assert_allclose(after[k], 1.5 * before[k], rtol=1e-6)
    same = {k: id(g) for k, g in ((k, g) for i, m in enumerate(net_a.parameter_modules())
                                   for k, g in m.grads.items())}
    assert same == refs, "gradients are updated in place"


def test_average_gradients_needs_backward():
    from weightmirror.circuits.rules import make_rule
    from weightmirror.models.mlp import build_mlp

    net = build_mlp(SIZES, make_rule("bp"), np, np.random.default_rng(0))
    with pytest.raises(ValueError, match="backward"):
        average_gradients(_FakeTwoRanks([]), net)


# --------------------------------------------------------------------------
# two MPI ranks
# --------------------------------------------------------------------------


def _mpirun_command(n: int) -> list[str]:
    cmd = [shutil.which("mpirun"), "-n", str(n)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    cmd.insert(1, "--oversubscribe")
    return cmd


def _need_mpi():
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not found (apt-get install openmpi-bin libopenmpi-dev)")
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py not installed (pip install mpi4py)")


def _run_ranks(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    proc = subprocess.run(
        _mpirun_command(2) + [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"mpirun failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_mpi_self_check_two_ranks(tmp_path):
    _need_mpi()
    proc = _run_ranks(["-m", "weightmirror.sims.distributed", "--backend", "mpi"], tmp_path)
    assert proc.stdout.count("OK") == 2, proc.stdout


def test_two_ranks_on_half_batches_equal_one_rank_on_the_whole(tmp_path):
    _need_mpi()
    out = tmp_path / "grads.npz"
    _run_ranks(["-m", "tests.test_distributed", str(out)], tmp_path)
    assert out.is_file(), "rank 0 wrote no gradients"
    reference = _grad_dict(_grads(*_problem()))
    with np.load(out) as got:
        assert sorted(got.files) == sorted(reference)
        for key, want in reference.items():
            np.testing.assert_allclose(got[key], want, rtol=1e-6, atol=1e-7, err_msg=key)


@pytest.mark.gpu
def test_nccl_single_rank_on_gpu():
    cupy = pytest.importorskip("cupy")
    try:
        if not cupy.cuda.is_available():
            pytest.skip("no CUDA GPU visible to CuPy")
        from cupy.cuda import nccl

        if not getattr(nccl, "available", True):
            pytest.skip("CuPy built without NCCL")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"CuPy/NCCL unusable: {exc}")
    comm = NCCLCommunicator()
    a = cupy.arange(10, dtype=cupy.float32)
    b = cupy.ones((3, 4), dtype=cupy.float64)
    comm.allreduce_mean([a, b])
    comm.bcast([a], root=0)
    assert cupy.allclose(a, cupy.arange(10) / 1.0)
    net_grads = {"W": cupy.ones((4, 3), dtype=cupy.float32)}

    class M:
        params = {"W": None}
        grads = net_grads

    average_gradients(comm, [M()])  # size 1: unchanged
    assert float(net_grads["W"].sum()) == 12.0


def test_mpi_communicator_without_launcher_is_one_rank():
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py not installed (pip install mpi4py)")
    # a singleton MPI init in a fresh interpreter, so this process's MPI state is untouched
    code = (
        "import numpy as np;from weightmirror.sims.distributed import MPICommunicator as C;c=C();"
        "a=np.ones(3,np.float32);c.allreduce_mean([a]);print(c.size,a.sum())"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"MPI singleton init unavailable here: {proc.stderr.strip()[-200:]}")
    assert proc.stdout.split() == ["1", "3.0"]


# --------------------------------------------------------------------------
# the script each MPI rank runs
# --------------------------------------------------------------------------


def _rank_main(out_path: str) -> int:
    comm = MPICommunicator()
    x, y = _problem()
    part = shard_indices(len(x), comm.rank, comm.size)
    net = _grads(x[part], y[part])
    average_gradients(comm, net.parameter_modules())
    if comm.is_root:
        grads = _grad_dict(net)
        np.savez(out_path, **grads)
    comm.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1]))
