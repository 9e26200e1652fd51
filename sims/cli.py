"""The ``weightmirror`` command (also ``python -m weightmirror``): every sub-command's argparse.

Sub-commands
------------
train    one rule, one model, one data set -> a results folder
compare  several rules on one data set -> one results folder per rule and a table
circuit  circuit mode in Brian2 (see ``weightmirror.sims.circuit``)
figures  figures from saved results folders (see ``weightmirror.figures``)
demo     the main job on the embedded default data (no download)
config   print a commented example configuration

This module only parses: each command hands a configuration to the code
that does the work. Bad input (an unknown flag value, a bad config key or
value, a missing or malformed data file, an output folder that already
holds a run) prints one line ``weightmirror: error: ...`` and exits with
status 2 (:data:`weightmirror.errors.EXIT_BAD_INPUT`); nothing already
written is touched.

A training run that diverges (its loss or weights stop being finite:
:class:`weightmirror.sims.training.DivergedError`) prints one line
``weightmirror: error: run diverged at epoch E, step S (loss = nan); the
last finite checkpoint is kept in OUT/checkpoint.npz; try a smaller --lr
...`` and exits with status 3 (:data:`weightmirror.errors.EXIT_DIVERGED`);
its results folder keeps the finite metrics, the last finite checkpoint and
a ``summary.json`` with ``"status": "diverged"``. ``compare`` goes on with
the other rules, shows the diverged one as such in its table and exits
with 3. SIGINT/SIGTERM checkpoints and exits with 130
(:data:`weightmirror.errors.EXIT_INTERRUPTED`); before a run's first
checkpoint it stops at once, and the line says the folder holds no results
(the same command run again reuses it).

Each run claims its results folder (:mod:`weightmirror.locks`): a second run
started into a folder in use stops with one line and status 2. A file
system that refuses a write (full, read-only) stops the run with one line
and status 2, the files already written intact.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from importlib import resources
from pathlib import Path

from .. import __version__, results
from ..circuits.rules import RULE_NAMES
from ..errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED, InputError

__all__ = ["main", "build_parser", "UsageError"]

EXAMPLES = ("train", "circuit")


class UsageError(InputError):
    """A command-line value that argparse could not check by itself."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump), like every other error."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"weightmirror: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum: int, wording: str):
    """An argparse type: an integer >= ``minimum``, else a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}")
        return value

    return parse


def _finite_float(text: str) -> float:
    """An argparse type: a finite number."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


_positive_int = _int_at_least(1, "a positive integer")


def _positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _epochs(text: str) -> int:
    """An argparse type: a number of epochs, 1 to :data:`MAX_EPOCHS`."""
    value = _positive_int(text)
    if value > MAX_EPOCHS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_EPOCHS} epochs, got {text!r}")
    return value


#: the largest --epochs (the config's own bound on epochs)
MAX_EPOCHS = 1_000_000
_nonnegative_int = _int_at_least(0, "an integer >= 0")


# --------------------------------------------------------------------------
# train / compare
# --------------------------------------------------------------------------


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    from ..models.backend import DEVICES
    from ..models.zoo import MODEL_NAMES
    from .config import TrainConfig
    from .datasets import DATASETS

    d = TrainConfig()
    p.add_argument("--model", choices=MODEL_NAMES, help=f"architecture (default: the config's, else {d.model})")
    p.add_argument("--data", choices=DATASETS, help=f"data set (default: the config's, else {d.data})")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the data set's files "
                   "(default: the data set's usual place; fashion-mnist: /usr/share/datasets/fashion-mnist)")
    p.add_argument("--config", metavar="FILE.toml",
                   help="TOML file with any hyperparameters (flags override it); "
                        "see: weightmirror config --example train")
    p.add_argument("--init-from", metavar="DIR",
                   help="start the MLP from the W, B (and biases) of a results folder: a circuit run's final "
                        "weights or another MLP run's last checkpoint; the rule's initial phase is skipped")
    p.add_argument("--epochs", type=_epochs, metavar="N", help=f"(default: the config's, else {d.epochs})")
    p.add_argument("--batch-size", type=_positive_int, metavar="N",
                   help=f"(default: the config's, else {d.batch_size})")
    p.add_argument("--lr", type=_finite_float, metavar="LR",
                   help=f"learning rate, optim.lr (default: the config's, else {d.optim.lr})")
    p.add_argument("--seed", type=_nonnegative_int, metavar="S", help=f"(default: the config's, else {d.seed})")
    p.add_argument("--device", choices=DEVICES, help=f"NumPy or CuPy (default: the config's, else {d.device})")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--distributed", action="store_true",
                   help=f"data parallel over the ranks of 'mpirun -n K weightmirror {p.prog.split()[-1]} ...' "
                        "(run.distributed)")


def _training_values(args, rule: str | None) -> tuple[dict, dict]:
    """``(file values, flag overrides)`` of a train/compare command line."""
    from .config import read_file

    file_values = read_file(args.config) if args.config else {}
    flags = {name: getattr(args, name, None) for name in ("model", "data", "epochs", "seed", "device", "batch_size")}
    flags = {k: v for k, v in flags.items() if v is not None}
    if rule is not None:
        flags["rule"] = rule
    if args.data_dir is not None:
        flags["data_dir"] = args.data_dir
    if getattr(args, "init_from", None) is not None:
        flags["init_from"] = args.init_from
    if args.lr is not None:
        flags["optim"] = {"lr": args.lr}
    if getattr(args, "label", None) is not None:
        flags["label"] = args.label
    if args.distributed:
        flags["run"] = {"distributed": True}
    return file_values, flags


def cmd_train(args) -> int:
    # a run that diverges raises DivergedError: main() prints its one line and exits with EXIT_DIVERGED
    from .config import resolve
    from .report import format_table
    from .training import train

    if args.resume:
        if args.config:
            raise UsageError(f"--config: not with --resume (the run continues as {Path(args.out) / 'config.toml'} "
                             "says; only --epochs may change it)")
        # every flag given goes to train(), which refuses any that contradicts the run's config.toml
        _, changes = _training_values(args, args.rule)
        run = train(changes or None, args.out, resume=True, progress=not args.quiet)
    else:
        run = train(resolve(*_training_values(args, args.rule)), args.out, progress=not args.quiet)
    summary = run.summary
    if summary.get("rank", 0) != 0:  # rank 0 reports for a data-parallel run
        return EXIT_INTERRUPTED if not summary["completed"] else 0
    if not summary["completed"]:  # SIGINT/SIGTERM: checkpointed at the current step
        print(f"weightmirror: interrupted; continue with: weightmirror train --resume --out {args.out}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_table([summary]))
    print(f"results: {Path(args.out)}")
    return 0


def _seeds(text: str) -> tuple[int, ...]:
    """An argparse type: ``0,1,2`` or a range ``0-4``; distinct integers >= 0."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(v) for v in text.split("-"))
            seeds = tuple(range(lo, hi + 1))
        else:
            seeds = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2 or 0-4, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds >= 0 like 0,1,2 or 0-4, got {text!r}")
    return seeds


def cmd_compare(args) -> int:
    import contextlib

    from .. import locks
    from .config import resolve
    from .training.output import check_out_dir

    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    bad = [r for r in rules if r not in RULE_NAMES]
    if bad or not rules:
        raise UsageError(f"--rules: unknown rule(s) {', '.join(bad) or '(none given)'}; allowed: {', '.join(RULE_NAMES)}")
    if len(set(rules)) != len(rules):
        raise UsageError(f"--rules: a rule is named twice ({args.rules}); each rule writes OUT/<rule>/")
    out = Path(args.out)
    # one seed: OUT/<rule>/; several: OUT/<rule>/seed-<s>/ and the statistics over them
    seeds = args.seeds if args.seeds is not None else (None,)
    jobs = []
    for rule in rules:
        for seed in seeds:
            values, flags = _training_values(args, rule)
            if seed is not None:
                flags["seed"] = seed
            folder = out / rule if args.seeds is None else out / rule / f"seed-{seed}"
            jobs.append((rule, seed, resolve(values, flags), folder))
    with contextlib.ExitStack() as claims:
        # every folder claimed and checked before any run trains (train() claims each again: re-entrant;
        # data parallel, rank 0 of each train() call claims its folder: the ranks are not known here)
        if not jobs[0][2].run.distributed:
            for _, _, _, folder in jobs:
                claims.enter_context(locks.claim(folder, "compare", hint="choose another --out"))
        for _, _, _, folder in jobs:
            check_out_dir(folder, False)
        return _compare_jobs(args, jobs, out)


def _compare_jobs(args, jobs, out: Path) -> int:
    from . import comparison
    from .report import format_table
    from .training import DivergedError, load_data, train

    data = load_data(jobs[0][2])
    summaries, diverged = [], False
    for rule, seed, cfg, folder in jobs:
        what = f"rule {rule}" + ("" if seed is None else f", seed {seed}")
        try:
            run = train(cfg, folder, progress=not args.quiet, data=data,
                        log=(lambda s: None) if args.quiet else print)
        except DivergedError as exc:  # a failed run: say so, go on with the others
            diverged = True
            summaries.append(exc.summary)
            if exc.summary.get("rank", 0) == 0:
                print(f"weightmirror: error: {what}: {exc.message(cli=True)}", file=sys.stderr)
            continue
        summaries.append(run.summary)
        if not run.summary["completed"]:
            print(f"weightmirror: interrupted during {what}; continue it with: "
                  f"weightmirror train --resume --out {folder}", file=sys.stderr)
            return EXIT_INTERRUPTED
    if all(s.get("rank", 0) == 0 for s in summaries):  # rank 0 reports for a data-parallel run
        if args.seeds is None:
            print(format_table(summaries))
        else:
            result = comparison.compare(comparison.collect([out]), reference="bp")
            written = comparison.write(result, out)
            print(comparison.format_markdown(result))
            print(f"statistics: {', '.join(str(p) for p in written)}")
    return EXIT_DIVERGED if diverged else 0


# --------------------------------------------------------------------------
# circuit
# --------------------------------------------------------------------------


def _layers(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 784,100,10, got {text!r}") from None
    return sizes  # the declaration checks the sizes (CircuitSpec)


def _add_circuit_parser(sub) -> None:
    from ..circuits.spec import CIRCUIT_RULES, DEVICES, MIRROR_PLASTICITY, NEURON_KINDS, SCHEDULES
    from .datasets import IN_MEMORY_DATASETS

    p = sub.add_parser(
        "circuit", help="circuit mode: WM/KP/FA circuits as Brian2 neuron populations",
        description="Run the weight-mirror / Kolen-Pollack / feedback-alignment circuit as explicit "
                    "neuron populations in Brian2 and write a results folder. "
                    "See: weightmirror config --example circuit",
        epilog="Simulated time and what it buys. Without --duration a run takes the time its schedule "
               "needs. Mirror mode: each layer's noise is redrawn every noise.correlation_time (5 ms) and "
               "even and odd layers take turns as sources, so each feedback matrix B_l gets duration / "
               "(2 x 5 ms) noise samples. Settled (after about 3 / d samples, d the decay per sample), B's "
               "relative error from sampling is about sqrt(F d / 2) for a layer of fan-in F, its angle the "
               "arctangent of that; a mirror-only run without rule.lr/decay sets d = 2 tan^2(7 deg) / F for "
               "its widest layer and runs until the initial B's share is 2 %: 83 s of simulated time for "
               "the default 64-32-10 (8,300 samples per layer), 1,017 s for 784-100-10 (a compiled device). With "
               "--duration T it takes the decay that ends closest to W for that time. Engaged mode: one "
               "input per phases.presentation (40 ms) is one online learning step; without --duration a "
               "run makes --epochs passes over the training set (default 3: 172 s for digits' 1,437 "
               "images), an alternating run as many mirror + engaged blocks as they need. Spiking neurons "
               "add their spike noise. A spiking mirror without settings holds each noise sample 10 ms "
               "(Poisson; 5 ms traces) or 20 ms (LIF; 20 ms traces), turns layers every 1 s and runs until "
               "the noise-aware closed form puts every layer within 13 degrees: at a cortical 20 Hz hours of "
               "simulated time for a 784-input layer (LIF 784-100-10: 18,000 s; measured 12.7 deg after "
               "24,000 s; bench/spiking_mirror_784.py, BENCHMARKS.md sec. 6). The closed form takes units "
               "as linear; --pilot 200s measures the mirror's moments in the circuit itself first and "
               "predicts the run's time course from them.")
    p.add_argument("--rule", choices=CIRCUIT_RULES, default=None, help="learning rule (default: wm)")
    p.add_argument("--layers", type=_layers, default=None, metavar="N0,N1,...",
                   help="population sizes (default: 784,100,10)")
    p.add_argument("--neuron", choices=NEURON_KINDS, default=None, help="neuron model: rate units, spiking (Poisson) or lif (leaky integrate-and-fire, 20 Hz baseline) (default: rate)")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="start from the W and B of a results folder: a rate-mode MLP run's last checkpoint or "
                        "a circuit run's final weights (the layers follow unless --layers is given)")
    p.add_argument("--dale", action="store_true",
                   help="Dale's law: excitatory units, signed weights through inhibitory interneurons")
    p.add_argument("--mirror-plasticity", choices=MIRROR_PLASTICITY, default=None,
                   help="wm: one Hebbian product per noise sample, or a spike-timing rule (spiking neurons) "
                        "(default: sample)")
    p.add_argument("--pilot", default=None, metavar="T",
                   help="mirror-only runs: first simulate T (e.g. 200s) on independent noise to measure the "
                        "mirror's moments in this circuit; every metrics row then gives the prediction from "
                        "them (pilot_angles_deg) beside the closed form's (default: no pilot)")
    p.add_argument("--phase", choices=SCHEDULES, default=None,
                   help="mirror, engaged or alternate (default: mirror for wm, engaged otherwise)")
    p.add_argument("--duration", default=None, metavar="T",
                   help="simulated time, e.g. 2s or 500ms (default: what the schedule needs, see below)")
    p.add_argument("--epochs", type=_positive_float, default=None, metavar="E",
                   help="engaged/alternate without --duration: passes over the training set (default: 3)")
    p.add_argument("--data", default=None, choices=IN_MEMORY_DATASETS,
                   help="data set for engaged mode (default: digits)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder of the data files (fashion-mnist: Debian's /usr/share/datasets/fashion-mnist)")
    p.add_argument("--downsample", type=_positive_int, default=None, metavar="K",
                   help="average-pool the images by this factor (default: 1)")
    p.add_argument("--device", choices=DEVICES, default=None,
                   help="runtime (NumPy), cython, cpp (cpp_standalone) or cuda (cuda_standalone) (default: runtime)")
    p.add_argument("--threads", type=_nonnegative_int, default=None, metavar="N",
                   help="OpenMP threads for --device cpp (default: 1)")
    p.add_argument("--dt", default=None, metavar="T", help="integration step (default: 0.5ms)")
    p.add_argument("--record-interval", default=None, metavar="T",
                   help="simulated time per metrics row (default: 1/50 of the run, at least 100ms)")
    p.add_argument("--seed", type=_nonnegative_int, default=None, metavar="S", help="(default: 0)")
    p.add_argument("--label", default=None, metavar="NAME",
                   help="the run's name in figures and tables (default: the rule)")
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="a TOML file with the declaration (flags override it)")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _circuit_overrides(args) -> dict:
    """The circuit flags in config-key form (only those given)."""
    out: dict = {}
    if args.layers is not None:
        out["layers"] = list(args.layers)
    if args.rule is not None:
        out["rule"] = args.rule
    phases = {}
    if args.phase is not None:
        phases["schedule"] = args.phase
    if args.duration is not None:
        phases["duration"] = args.duration
    if args.record_interval is not None:
        phases["record_interval"] = args.record_interval
    if args.epochs is not None:
        phases["epochs"] = args.epochs
    if phases:
        out["phases"] = phases
    if args.neuron is not None:
        out["neuron"] = {"kind": args.neuron}
    if args.dale:
        out["dale"] = True
    if args.mirror_plasticity is not None:
        out["mirror_plasticity"] = args.mirror_plasticity
    if args.pilot is not None:
        out["mirror_pilot"] = args.pilot
    for flag in ("device", "threads", "seed", "data", "downsample", "dt", "label"):
        value = getattr(args, flag)
        if value is not None:
            out[flag] = value
    return out


def cmd_circuit(args) -> int:
    from . import circuit
    from .report import circuit_line

    file_values = circuit.read_file(args.config) if args.config else {}
    spec, source = circuit.resolve_from_weights(file_values, _circuit_overrides(args), args.init_from)
    if source is not None and source.biases is not None and any(b.any() for b in source.biases) \
            and spec.phases.schedule == "mirror":
        print(f"--init-from {args.init_from}: W and B taken; its biases are carried unchanged to the run's "
              "weights_final.npz (circuit units have none: not simulated)", file=sys.stderr)
    run = circuit.simulate(spec, args.out, progress=not args.quiet, data_dir=args.data_dir,
                           weights=None if source is None else source.layers,
                           biases=None if source is None else source.biases)
    print(circuit_line(run.summary))
    print(f"results in {args.out}")
    return 0


# --------------------------------------------------------------------------
# figures, demo, config
# --------------------------------------------------------------------------


def _add_figures_parser(sub) -> None:
    p = sub.add_parser(
        "figures", help="figures and the results table from saved results folders",
        description="Make every figure the given results folders allow (PNG and PDF) and the results "
                    "table (Markdown and LaTeX) beside the published numbers. Reads results only; "
                    "never trains or simulates.")
    p.add_argument("--results", nargs="+", required=True, metavar="DIR",
                   help="results folders of train/compare/circuit runs, or folders holding them")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the figures to")


def cmd_figures(args) -> int:
    from ..figures.make import make_all

    report = make_all(args.results, args.out)
    for path in report["made"]:
        p = Path(path)
        other = ".pdf" if p.suffix == ".png" else ".tex"
        print(f"made     {p.stem:28s} {p} (+ {other})")
    for name, why in report["skipped"].items():
        print(f"skipped  {name:28s} {why}")
    for path, why in report["ignored"].items():
        print(f"ignored  {path}: {why}")
    damaged = report.get("damaged", {})
    if damaged:
        # a file that is there but unreadable is bad input (exit 2), even when the
        # other folders made their figures; a run still going is not (it is only ignored)
        (path, why), more = next(iter(damaged.items())), len(damaged) - 1
        print(f"weightmirror: error: results folder {path} is damaged: {why}"
              + (f" (and {more} more, named above)" if more else ""), file=sys.stderr)
        return 2
    if not report["made"]:
        print("weightmirror: no figure could be made from these results", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args) -> int:
    from . import demo

    return demo.run(args.out, quick=args.quick, progress=not args.quiet)


def example_config(kind: str) -> str:
    """The commented example config shipped with the package (``train`` or ``circuit``)."""
    return resources.files("weightmirror").joinpath("examples", f"{kind}.toml").read_text(encoding="utf-8")


def cmd_config(args) -> int:
    sys.stdout.write(example_config(args.example))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="weightmirror",
                     description="Learning without weight transport: the weight mirror and Kolen-Pollack "
                                 "beside backprop, feedback alignment and sign symmetry, in Brian2 circuits "
                                 "(circuit mode) and on NumPy/CuPy arrays (rate mode).")
    parser.add_argument("--version", action="version", version=f"weightmirror {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("train", help="train one rule; writes a results folder")
    p.add_argument("--rule", choices=RULE_NAMES, help="learning rule (default: the config's, else bp)")
    _add_training_flags(p)
    p.add_argument("--label", default=None, metavar="NAME",
                   help="the run's name in figures and tables (default: the rule)")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder to write")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")

    p = sub.add_parser("compare", help="train several rules on the same data; print the table")
    default_rules = ",".join(r for r in RULE_NAMES if r != "ss")
    p.add_argument("--rules", default=default_rules, metavar="R1,R2,...",
                   help=f"comma-separated rules, each writes OUT/<rule>/ (default: {default_rules})")
    p.add_argument("--seeds", type=_seeds, default=None, metavar="S1,S2,...",
                   help="run every rule with each seed (OUT/<rule>/seed-<s>/) and write the statistics over "
                        "them, paired against bp, to OUT/comparison.json and OUT/comparison.md "
                        "(default: one run per rule with the config's seed)")
    _add_training_flags(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder; each rule writes OUT/<rule>/")

    _add_circuit_parser(sub)
    _add_figures_parser(sub)

    p = sub.add_parser("demo", help="the main job on embedded data: circuit, every rule, figures")
    p.add_argument("--out", default="weightmirror-demo", metavar="DIR",
                   help="folder to write (default: ./weightmirror-demo)")
    p.add_argument("--quick", action="store_true", help="a smaller run (for tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("config", help="print a commented example configuration",
                       description="Print a commented configuration with every key and its default: "
                                   "weightmirror config --example train > my.toml")
    p.add_argument("--example", choices=EXAMPLES, default="train",
                   help="which configuration: train (rate mode) or circuit (default: train)")
    return parser


COMMANDS = {"train": cmd_train, "compare": cmd_compare, "circuit": cmd_circuit, "figures": cmd_figures,
            "demo": cmd_demo, "config": cmd_config}


#: what an OSError that reaches the command line means (a file system that refuses a write or read)
_OS_ERRORS = {errno.ENOSPC: "the disk is full", errno.EROFS: "a read-only file system",
              errno.EDQUOT: "the disk quota is exceeded", errno.EACCES: "permission denied",
              errno.EPERM: "not permitted", errno.EISDIR: "a folder, not a file",
              errno.ENOTDIR: "a file, not a folder", errno.EEXIST: "a file is in the way",
              errno.ENOENT: "not found", errno.ENAMETOOLONG: "the name is too long"}

_WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for name in ("out", "results"):  # an empty folder name would mean the current folder
            values = getattr(args, name, None)
            for value in values if isinstance(values, list) else [values]:
                results.check_out_path(value, f"--{name}")
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that went away shows here, inside the handler, not at exit
        return status
    except BrokenPipeError:
        # the reader of our output went away (`weightmirror figures ... | head`): stop quietly, as a
        # shell tool does; what was written to files stays (a training run resumes from its checkpoint)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
    except InputError as exc:
        print(f"weightmirror: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        # a file system that refuses (full, read-only, no permission) outside the checked writes
        if exc.errno not in _OS_ERRORS:
            raise
        where = exc.filename if exc.filename is not None else "a file"
        kept = "; files already written are kept as they were" if exc.errno in _WRITE_ERRNOS else ""
        print(f"weightmirror: error: {where}: {_OS_ERRORS[exc.errno]} ({exc.strerror}){kept}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        # StoppedBeforeStart says what the folder holds and what to run next
        print(f"weightmirror: {_one_line(exc) if str(exc) else 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RuntimeError as exc:
        # a diverged training run (train, demo): one line, no traceback; rank 0 speaks for all ranks
        divergence = sys.modules.get(f"{__package__}.training.divergence")
        if divergence is None or not isinstance(exc, divergence.DivergedError):
            raise
        if exc.summary.get("rank", 0) == 0:
            print(f"weightmirror: error: {exc.message(cli=True)}", file=sys.stderr)
        return EXIT_DIVERGED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
