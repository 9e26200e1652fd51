"""Rate-mode training, split by job.

``sources``      where batches come from (arrays in memory, ImageNet folders);
``seeds``        the seeded random streams of a run;
``metrics``      errors, angle(B, Wᵀ), angle(δ, δ_BP), weight norms, one row per epoch;
``checkpoint``   the network, optimiser and a small :class:`TrainState` in one atomic file;
``interrupts``   SIGINT/SIGTERM as a request to stop at the next step;
``output``       the results folder (or none: a run kept in memory);
``divergence``   a non-finite loss or weight stops the run: :class:`DivergedError`;
``loop``         :func:`train` and its one step function :func:`train_step`.
"""
from .checkpoint import TrainState, load_checkpoint, save_checkpoint
from .divergence import DivergedError
from .loop import Trainee, build_network, load_data, train, train_step
from .output import RunExistsError
from .sources import ArraySource, BatchSource, ImageFolderSource, make_batch_source

__all__ = ["train", "DivergedError", "train_step", "Trainee", "build_network", "load_data", "TrainState",
           "save_checkpoint", "load_checkpoint", "RunExistsError", "BatchSource", "ArraySource", "ImageFolderSource",
           "make_batch_source"]
