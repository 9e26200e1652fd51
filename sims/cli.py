"""The ``weightmirror`` command (also ``python -m weightmirror``).

Sub-commands
------------
train    one rule, one model, one data set -> a results folder
compare  every rule on one data set -> one results folder per rule and a table
circuit  circuit mode in Brian2 (see ``sims.circuit``)
demo     the main job on the embedded default data (no download)
figures  figures from saved results folders (see ``figures``)

Bad input (an unknown flag value, a bad config key or value, a missing or
malformed data file, an output folder that already holds a run) prints one
line ``weightmirror: error: ...`` and exits with status 2; nothing already
written is touched.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError

from weightmirror.circuits.rules import RULE_NAMES

EXIT_USAGE = 2


class UsageError(InputError):
    """A command-line value that argparse could not check by itself."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump)."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def _add_common_training_flags(p: argparse.ArgumentParser) -> None:
    from weightmirror.sims.config import DATASETS, MODELS

    p.add_argument("--model", choices=MODELS, help="architecture (default: the config's, else mlp)")
    p.add_argument("--data", choices=DATASETS, help="data set (default: the config's, else digits)")
    p.add_argument("--data-dir", help="folder holding the data set's files")
    p.add_argument("--config", help="TOML file with any hyperparameters (flags override it)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=float, help="learning rate (optim.lr)")
    p.add_argument("--seed", type=_nonnegative_int)
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--distributed", action="store_true",
                   help=f"data parallel over the ranks of 'mpirun -n K weightmirror {p.prog.split()[-1]} ...' "
                        "(run.distributed)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="weightmirror", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train one rule; writes a results folder")
    p.add_argument("--rule", choices=RULE_NAMES, help="learning rule (default: the config's, else bp)")
    _add_common_training_flags(p)
    p.add_argument("--out", required=True, help="results folder to write")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")

    p = sub.add_parser("compare", help="train several rules on the same data; print the table")
    p.add_argument("--rules", default=",".join(r for r in RULE_NAMES if r != "ss"),
                   help="comma-separated rules (default: all)")
    _add_common_training_flags(p)
    p.add_argument("--out", required=True, help="folder; each rule writes OUT/<rule>/")

    try:
        from weightmirror.sims import circuit
    except ImportError:  # circuit mode not installed in this checkout
        circuit = None
    if circuit is not None and hasattr(circuit, "add_parser"):
        circuit.add_parser(sub)

    p = sub.add_parser("demo", help="the main job on embedded data: circuit, every rule, figures")
    p.add_argument("--out", default="weightmirror-demo", help="folder to write (default: ./weightmirror-demo)")
    p.add_argument("--quick", action="store_true", help="a smaller run (for tests)")
    p.add_argument("--quiet", action="store_true")

    try:
        from weightmirror.figures import make as figures_make
    except ImportError:
        figures_make = None
    if figures_make is not None and hasattr(figures_make, "add_parser"):
        figures_make.add_parser(sub)
    return parser


def _overrides(args, *names) -> dict:
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def _training_config(args, rule: str | None):
    from weightmirror.sims import config

    file_values = config.load_toml(args.config) if args.config else {}
    flags = _overrides(args, "model", "data", "epochs", "seed", "device", "batch_size")
    if rule is not None:
        flags["rule"] = rule
    if args.data_dir is not None:
        flags["data_dir"] = args.data_dir
    if args.lr is not None:
        flags["optim"] = {"lr": args.lr}
    return config.resolve(file_values, flags)


def cmd_train(args) -> int:
    from weightmirror.sims import train

    if args.resume:
        overrides = {"epochs": args.epochs} if args.epochs else {}
        if args.distributed:
            overrides["run"] = {"distributed": True}
        summary = train.train(overrides or None, args.out, resume=True, progress=not args.quiet)
    else:
        cfg = _training_config(args, args.rule)
        if args.distributed:
            cfg["run"]["distributed"] = True
        summary = train.train(cfg, args.out, progress=not args.quiet)
    if summary.get("rank", 0) != 0:  # rank 0 reports for a data-parallel run
        return 130 if not summary["completed"] else 0
    if not summary["completed"]:  # SIGINT/SIGTERM: checkpointed at the current step
        print(f"weightmirror: interrupted; continue with: weightmirror train --resume --out {args.out}",
              file=sys.stderr)
        return 130
    print(format_table([summary]))
    print(f"results: {Path(args.out)}")
    return 0


def cmd_compare(args) -> int:
    from weightmirror.sims import train

    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    bad = [r for r in rules if r not in RULE_NAMES]
    if bad or not rules:
        raise UsageError(f"--rules: unknown rule(s) {', '.join(bad) or '(none given)'}; allowed: {', '.join(RULE_NAMES)}")
    configs = [_training_config(args, rule) for rule in rules]  # validate all before training any
    for cfg in configs:
        if args.distributed:
            cfg["run"]["distributed"] = True
    data = train.load_data(configs[0])
    summaries = []
    for rule, cfg in zip(rules, configs):
        summaries.append(train.train(cfg, Path(args.out) / rule, progress=not args.quiet, data=data,
                                     log=(lambda s: None) if args.quiet else print))
        if not summaries[-1]["completed"]:
            print(f"weightmirror: interrupted during rule {rule}; continue it with: "
                  f"weightmirror train --resume --out {Path(args.out) / rule}", file=sys.stderr)
            return 130
    if all(s.get("rank", 0) == 0 for s in summaries):  # rank 0 reports for a data-parallel run
        print(format_table(summaries))
    return 0


def format_table(summaries: list[dict]) -> str:
    """The comparison table: rule, test error, per-layer angles."""
    lines = ["| rule | test top-1 error (%) | angle(B, Wᵀ) per layer (°) | angle(δ, δ_BP) per layer (°) | time (s) |",
             "|---|---:|---|---|---:|"]
    for s in summaries:
        angles = " / ".join(f"{a:.1f}" for a in s["angles_deg"])
        deltas = " / ".join("–" if d is None or d != d else f"{d:.1f}" for d in s["delta_angles_deg"])
        lines.append(f"| {s['rule']} | {s['test_top1_error']:.2f} | {angles} | {deltas} | {s['wall_seconds']:.1f} |")
    return "\n".join(lines)


def cmd_demo(args) -> int:
    from weightmirror.sims import demo

    return demo.run(args.out, quick=args.quick, progress=not args.quiet)


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input: reported in one line, exit status 2."""
    return (InputError, FileNotFoundError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": cmd_train, "compare": cmd_compare, "demo": cmd_demo}
    try:
        if args.command in handlers:
            return handlers[args.command](args)
        if args.command == "circuit":
            from weightmirror.sims import circuit

            return circuit.run(args)
        if args.command == "figures":
            from weightmirror.figures import make

            return make.run(args)
        parser.error(f"unknown command {args.command}")
    except _known_errors() as exc:
        print(f"weightmirror: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("weightmirror: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
