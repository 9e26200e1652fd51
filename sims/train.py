"""Rate-mode training: the loop, the metrics, checkpoints and resume.

``train(cfg, out_dir)`` trains the configured model with the configured rule
and writes the results folder (see ``sims.results``). Randomness is drawn
from generators seeded by ``(seed, purpose, epoch)``, so an epoch's data order
and noise depend only on the seed and the epoch: a run resumed from its
checkpoint gives the same metrics as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np

from circuits.rules import angle_degrees
from models.backend import get_array_module, make_rng, synchronize, to_numpy
from models.layers import softmax_cross_entropy
from models.optim import SGD, Schedule
from sims import results
from sims.config import make_rule_from_config, resolve
from sims.data import Dataset, load_dataset

# purposes of the seeded generators
_INIT, _MIRROR0, _ORDER, _NOISE, _METRIC = range(5)


class RunExistsError(ValueError):
    """The output folder already holds a run and --resume was not given."""


def _seed(cfg: dict, *parts: int) -> list[int]:
    return [int(cfg["seed"]), *parts]


def load_data(cfg: dict) -> Dataset:
    flatten = cfg["model"] == "mlp"
    return load_dataset(cfg["data"], cfg["data_dir"] or None, flatten=flatten, seed=cfg["seed"])


def build_network(cfg: dict, data: Dataset, xp):
    from models.zoo import build_model
    rule = make_rule_from_config(cfg)
    rng = make_rng(xp, _seed(cfg, _INIT))
    return build_model(cfg["model"], data.image_shape, data.num_classes, rule, xp, rng,
                       **cfg["model_options"])


def evaluate(net, x, y, xp, batch_size: int) -> dict:
    """Top-1 (and top-5) error in percent, and the mean loss, in eval mode."""
    n = len(y)
    wrong1 = wrong5 = 0
    loss_sum = 0.0
    for start in range(0, n, batch_size):
        xb = xp.asarray(x[start:start + batch_size])
        yb = xp.asarray(y[start:start + batch_size])
        logits = net.forward(xb, train=False)
        loss, _ = softmax_cross_entropy(logits, yb, xp)
        loss_sum += loss * len(yb)
        pred = logits.argmax(axis=1)
        wrong1 += int((pred != yb).sum())
        if logits.shape[1] > 5:
            top5 = xp.argpartition(-logits, 5, axis=1)[:, :5]
            wrong5 += int((~(top5 == yb[:, None]).any(axis=1)).sum())
    out = {"test_loss": loss_sum / n, "test_top1_error": 100.0 * wrong1 / n}
    if net.weight_layers and net.weight_layers[-1].W.shape[0] > 5:
        out["test_top5_error"] = 100.0 * wrong5 / n
    return out


def feedback_angles(net, xp, rng) -> list[float]:
    """Per weight layer, angle(B, Wᵀ) in degrees (B the feedback the rule uses)."""
    return [angle_degrees(net.rule.feedback(layer, xp, rng), layer.W, xp) for layer in net.weight_layers]


def delta_angles(net, x, y, xp, rng) -> list[float]:
    """Per weight layer (bottom up), angle between the rule's δ and backprop's δ.

    Both backward passes start from the same forward pass on the same batch;
    the top layer's δ is the same for every rule (0°). Normalisation statistics
    are left as they were.
    """
    saved = {k: v.copy() for k, v in net.state().items() if k.endswith(("running_mean", "running_var"))}
    logits = net.forward(x, train=True)
    _, dlogits = softmax_cross_entropy(logits, y, xp)
    grads_before = [dict(m.grads) for m in net.parameter_modules()]
    rule_deltas: list = []
    net.backward(dlogits, rng=rng, record=rule_deltas)
    bp_deltas: list = []
    net.backward(dlogits, rng=rng, use_backprop=True, record=bp_deltas)
    for m, g in zip(net.parameter_modules(), grads_before):
        m.grads = g
    if saved:
        state = net.state()
        for k, v in saved.items():
            state[k][...] = v
    n = min(len(rule_deltas), len(bp_deltas))
    angles = [angle_degrees(a, b, xp) for a, b in zip(rule_deltas[:n], bp_deltas[:n])]
    # Layers below the first one that takes no error have none: report NaN.
    angles += [float("nan")] * (len(net.weight_layers) - n)
    return angles[::-1]


def weight_norms(net, xp) -> list[float]:
    return [float(xp.linalg.norm(layer.W)) for layer in net.weight_layers]


def _check_out_dir(out: Path, resume: bool) -> None:
    if resume:
        for name in (results.CONFIG, results.CHECKPOINT):
            if not (out / name).is_file():
                raise RunExistsError(f"--resume: {out / name} not found; nothing to resume in {out}")
        return
    taken = [n for n in (results.CONFIG, results.CHECKPOINT, results.SUMMARY, results.METRICS) if (out / n).exists()]
    if taken:
        raise RunExistsError(
            f"{out} already holds a run ({', '.join(taken)}); give --resume to continue it or another --out"
        )


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag, so the loop can checkpoint and stop."""

    def __init__(self):
        self.hit = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum, frame):
        if self.hit:  # second signal: give up at once
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(cfg: dict, out_dir: str | Path, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, data: Dataset | None = None,
          stop_after: int | None = None) -> dict:
    """Train per ``cfg`` (resolved by ``sims.config.resolve``) into ``out_dir``.

    ``stop_after`` ends this invocation after that many epochs, checkpointed,
    as an interruption would (a later ``resume=True`` call continues).
    Returns the summary (also written to ``summary.json`` once all epochs ran).
    """
    out = Path(out_dir)
    _check_out_dir(out, resume)
    if resume:
        # The run's own resolved config; only the number of epochs may be raised.
        saved = resolve(_read_toml(out))
        if cfg and cfg.get("epochs"):
            saved["epochs"] = int(cfg["epochs"])
        cfg = saved
    xp = get_array_module(cfg["device"])
    data = data if data is not None else load_data(cfg)
    net = build_network(cfg, data, xp)
    rule = net.rule
    o = cfg["optim"]
    opt = SGD(net.parameter_modules(), rule, xp, o["momentum"], o["nesterov"], o["weight_decay"])
    schedule = Schedule(o["lr"], o["schedule"], cfg["epochs"], o["warmup_epochs"], tuple(o["milestones"]),
                        o["gamma"], o["final_fraction"])
    batch = cfg["batch_size"]
    steps_per_epoch = max(1, len(data.y_train) // batch)  # drop the last partial batch
    metric_n = min(cfg["run"]["delta_batch_size"], len(data.y_train))
    metric_x = xp.asarray(data.x_train[:metric_n])
    metric_y = xp.asarray(data.y_train[:metric_n])

    rows: list[dict] = []
    start_epoch = 0
    wall_before = 0.0
    if resume:
        arrays = results.load_arrays(out / results.CHECKPOINT)
        meta = json.loads(str(arrays.pop("__meta__")))
        net.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("net.")})
        opt.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("opt.")})
        rows = meta["metrics"]
        start_epoch = meta["epoch"]
        wall_before = meta["wall_seconds"]
        results.write_metrics(out / results.METRICS, rows)
        log(f"resuming {out} at epoch {start_epoch + 1}/{cfg['epochs']}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        results.atomic_write_text(out / results.CONFIG, results.to_toml(cfg))
        results.write_metrics(out / results.METRICS, [])
        rule.initial_phase(net.weight_layers, xp, make_rng(xp, _seed(cfg, _MIRROR0)))
        rows.append(_metrics_row(net, xp, cfg, -1, metric_x, metric_y, data, None, 0.0, 0.0))
        results.append_metrics(out / results.METRICS, rows[-1])

    def save_checkpoint(epoch_done: int, wall: float) -> None:
        arrays = {f"net.{k}": to_numpy(v) for k, v in net.state().items()}
        arrays.update({f"opt.{k}": to_numpy(v) for k, v in opt.state().items()})
        meta = {"epoch": epoch_done, "wall_seconds": wall, "metrics": rows}
        arrays["__meta__"] = np.array(json.dumps(results._jsonable(meta)))
        results.save_arrays(out / results.CHECKPOINT, arrays)

    t_start = time.perf_counter()
    interrupted = False
    with _Interrupt() as stop:
        for epoch in range(start_epoch, cfg["epochs"]):
            order_rng = np.random.default_rng(_seed(cfg, _ORDER, epoch))
            noise_rng = make_rng(xp, _seed(cfg, _NOISE, epoch))
            perm = order_rng.permutation(len(data.y_train))
            bar = _progress(steps_per_epoch, f"{rule.key} epoch {epoch + 1}/{cfg['epochs']}", progress)
            t0 = time.perf_counter()
            loss_sum = 0.0
            losses = []
            for step in range(steps_per_epoch):
                idx = perm[step * batch:(step + 1) * batch]
                xb = xp.asarray(data.x_train[idx])
                yb = xp.asarray(data.y_train[idx])
                logits = net.forward(xb, train=True)
                loss, dlogits = softmax_cross_entropy(logits, yb, xp, o["label_smoothing"])
                net.backward(dlogits, rng=noise_rng)
                opt.step(schedule(epoch + step / steps_per_epoch))
                rule.after_step(net.weight_layers, xp, noise_rng)
                losses.append(loss)
                if bar is not None:
                    bar.update(1)
                    if step % 20 == 0:
                        bar.set_postfix(loss=f"{loss:.3f}")
                if stop.hit:
                    break
            synchronize(xp)
            epoch_seconds = time.perf_counter() - t0
            if bar is not None:
                bar.close()
            if stop.hit:
                # An epoch cut short is not kept: the checkpoint of the last whole epoch stands.
                interrupted = True
                log(f"interrupted during epoch {epoch + 1}; the last checkpoint (epoch {epoch}) stands; "
                    f"continue with --resume")
                break
            loss_sum = float(np.mean(losses)) if losses else math.nan
            row = _metrics_row(net, xp, cfg, epoch, metric_x, metric_y, data, loss_sum, epoch_seconds,
                               schedule(epoch + 1 - 1e-9))
            rows.append(row)
            results.append_metrics(out / results.METRICS, row)
            wall = wall_before + time.perf_counter() - t_start
            if (epoch + 1) % cfg["run"]["checkpoint_every"] == 0 or epoch + 1 == cfg["epochs"]:
                save_checkpoint(epoch + 1, wall)
            if progress:
                log(_epoch_line(rule.key, row))
            if stop_after is not None and epoch + 1 - start_epoch >= stop_after and epoch + 1 < cfg["epochs"]:
                if (epoch + 1) % cfg["run"]["checkpoint_every"]:
                    save_checkpoint(epoch + 1, wall)
                interrupted = True
                break

    wall = wall_before + time.perf_counter() - t_start
    last = rows[-1]
    summary = {
        "rule": rule.key,
        "rule_long_name": rule.long_name,
        "model": cfg["model"],
        "data": cfg["data"],
        "epochs": last["epoch"],
        "test_top1_error": last["test_top1_error"],
        "test_top5_error": last.get("test_top5_error"),
        "train_loss": last.get("train_loss"),
        "angles_deg": last["angles_deg"],
        "delta_angles_deg": last["delta_angles_deg"],
        "weight_norms": last["weight_norms"],
        "layer_shapes": [list(layer.W.shape) for layer in net.weight_layers],
        "n_parameters": int(sum(int(np.prod(a.shape)) for m in net.parameter_modules() for a in m.params.values())),
        "device": cfg["device"],
        "seed": cfg["seed"],
        "wall_seconds": wall,
        "completed": not interrupted,
    }
    if not interrupted:
        results.write_json(out / results.SUMMARY, summary)
    return summary


def _read_toml(out: Path) -> dict:
    from sims.config import load_toml

    return load_toml(out / results.CONFIG)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _metrics_row(net, xp, cfg, epoch, metric_x, metric_y, data, train_loss, epoch_seconds, lr) -> dict:
    """One metrics.jsonl row; epoch 0 is the state before training."""
    metric_rng = make_rng(xp, _seed(cfg, _METRIC))
    row = {"epoch": epoch + 1}
    if train_loss is not None:
        row["train_loss"] = train_loss
    row.update(evaluate(net, data.x_test, data.y_test, xp, cfg["run"]["eval_batch_size"]))
    row["angles_deg"] = feedback_angles(net, xp, metric_rng)
    row["delta_angles_deg"] = delta_angles(net, metric_x, metric_y, xp, metric_rng)
    row["weight_norms"] = weight_norms(net, xp)
    row["epoch_seconds"] = epoch_seconds
    row["lr"] = lr
    return row


def _epoch_line(rule: str, row: dict) -> str:
    angles = "/".join(f"{a:.1f}" for a in row["angles_deg"])
    return (f"[{rule}] epoch {row['epoch']}: loss {row.get('train_loss', float('nan')):.4f}  "
            f"test error {row['test_top1_error']:.2f}%  angle(B,W^T) {angles} deg  "
            f"{row['epoch_seconds']:.1f}s")
