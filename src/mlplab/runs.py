"""``mlplab-runs``: every run on disk in one table — its status, the config keys that differ
between the runs shown and its final metrics; or per group, the mean ± std of every metric;
or the runs' curves in one PNG.

    mlplab-runs                                   # every run under logs/
    mlplab-runs logs/train/multirun --group-by optimizer.lr
    mlplab-runs --where optimizer.lr=0.01 --status ok --sort test/acc --desc
    mlplab-runs --metrics val/loss test/acc --csv runs.csv      # or --markdown, --json
    mlplab-runs --group-by optimizer.lr --plot val/loss         # → runs_val_loss.png

A run is a dir holding what ``mlplab-train`` writes: a plain run, a multirun job, a sweep trial
or a population member (the population dir holds their mean and is no row). Its status is
``ok`` (it wrote ``metrics.json``), ``running`` (a live lock), ``diverged``/``failed``/``pruned``
(its ``error.txt``, population's ``summary.csv`` or sweep's ``trials.csv`` says so), else
``incomplete``. A damaged file is a note, never a crash. It only reads run dirs and imports
neither torch nor Lightning, so it answers at once (docs/look.md).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlplab.errors import ArgumentParser, ConfigError, clean_exit
from mlplab.run.rundir import LOCK_NAME, lock_owner

# A dir holding any of these is a run (Hydra's ``.hydra``, the lock and a population member's
# ``wandb_id`` come first: a run that is starting, or one killed while it started).
RUN_FILES = frozenset(
    {"config.yaml", "metrics.json", "run_info.json", ".hydra", LOCK_NAME, "wandb_id"}
)
NOT_RUNS = frozenset({"checkpoints", "csv", "wandb", "tensorboard", "mlruns", "__pycache__"})
ERROR_FILE = "error.txt"  # mlplab.sweep.multirun.ERROR_FILE, without importing Hydra
STATUSES = ("ok", "running", "diverged", "failed", "pruned", "incomplete")
TRIAL_STATES = {"FAIL": "failed", "PRUNED": "pruned"}  # Optuna's states in trials.csv
OWN = frozenset({"defaults", "paths.output_dir", "run_name"})  # the row names the run already
REF = re.compile(r"\$\{([\w.]+)\}")  # ${seed}: a plain reference to another key
MEMBER = re.compile(r"member_(\d+)")
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser is ~10x faster
MISSING = object()


@dataclass
class Run:
    """One run dir as read from disk."""

    path: Path
    name: str  # its path relative to the folder it was found under
    status: str = "incomplete"
    config: dict[str, Any] = field(default_factory=dict)  # flat: ``optimizer.lr`` → 0.01
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    history: tuple[Path, int | None] | None = None  # its epochs' metrics.csv (and member)
    follows: set[str] = field(default_factory=set)  # keys that are ${other key} in the file


# ---- finding and reading runs -------------------------------------------------------------
def find(root: Path) -> tuple[list[Path], dict, dict, list[tuple[Path, str]]]:
    """Walk ``root`` for run dirs (not walked into), population dirs (their members are runs)
    and sweep dirs. Returns the run dirs; member dir → (its population dir, member number, its
    ``summary.csv`` row); trial dir → its row of ``trials.csv``; and notes, such as the dirs
    that hold none of these."""
    runs, member_of, trial_of, notes = [], {}, {}, []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as err:
            notes.append((folder, f"can't be read ({err.strerror})"))
            continue
        names = {e.name for e in entries}
        subdirs = [Path(e.path) for e in entries if _walkable(e)]
        # A population's summary.csv lists its members (a multirun's, its jobs).
        header, rows, note = _read_table(folder / "summary.csv")
        population = any(d.name.startswith("member_") for d in subdirs)
        if population or {"member", "run_dir"} <= set(header):
            if note:
                notes.append((folder, note))
            for row in rows:
                name = Path(row.get("run_dir") or "").name
                if name and str(row.get("member", "")).isdigit():
                    for dir_ in (folder / name, folder.parent / name):  # seeds=/cv=, or trials
                        member_of.setdefault(dir_, (folder, int(row["member"]), row))
            for dir_ in subdirs:  # a population still running: no summary.csv yet
                if match := MEMBER.fullmatch(dir_.name):
                    member_of.setdefault(dir_, (folder, int(match[1]), {}))
            stack += subdirs
        elif names & RUN_FILES:
            runs.append(folder)
        elif subdirs:
            _, rows, note = _read_table(folder / "trials.csv")
            if note:
                notes.append((folder, note))
            for row in rows:
                trial_of[folder / f"trial_{row.get('number')}"] = row
            stack += subdirs
        else:
            notes.append((folder, "not a run: no config.yaml, metrics.json or run_info.json"))
    return runs, member_of, trial_of, notes


def _walkable(entry: os.DirEntry) -> bool:
    if entry.name in NOT_RUNS or entry.name.startswith("."):
        return False
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _read_table(path: Path) -> tuple[list[str], list[dict], str]:
    """A CSV file's header and rows, and a note if it can't be read."""
    header: list[str] = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            return header, list(reader), ""
    except FileNotFoundError:
        return [], [], ""
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        return header, [], f"{path.name} can't be read ({_reason(err)})"


def read_run(path: Path, name: str, member=None, trial: dict | None = None) -> Run:
    """The run in ``path``; ``member``: (population dir, number, summary row) if it is one."""
    run = Run(path, name)
    run.config, run.follows = _read_config(path / "config.yaml", run.notes)
    metrics = _read_metrics(path / "metrics.json", run.notes)
    match = MEMBER.fullmatch(path.name)
    if member is None and match and (path.parent / "metrics.csv").is_file():
        member = (path.parent, int(match[1]), {})  # found without its population
    if member is not None:
        run.history = (member[0] / "metrics.csv", member[1])
    else:
        run.history = (path / "csv" / "metrics.csv", None)
    try:
        owner = lock_owner(path) or (lock_owner(member[0]) if member is not None else None)
    except OSError:
        owner = None
    row, trial = (member[2] if member else {}), trial or {}
    # a trial pruned in a population has the metrics of its epochs so far: still not a result
    pruned = trial.get("state") == "PRUNED" or row.get("status") == "pruned"
    if owner is not None:
        run.status = "running"
        run.notes.append(f"in use by {owner}")
    elif metrics is not None:
        run.status, run.metrics = "pruned" if pruned else "ok", metrics
    else:
        error = _read_text(path / ERROR_FILE)
        if error is not None:
            run.status = "diverged" if "diverged" in error else "failed"
        elif row.get("status") == "diverged":
            run.status, error = "diverged", row.get("error")
        elif trial.get("state") in TRIAL_STATES:
            run.status, error = TRIAL_STATES[trial["state"]], trial.get("fail_reason")
        elif not run.notes:
            error = "no metrics.json: stopped before the end, or still starting"
        if error:
            run.notes.append(" ".join(error.split()))
    return run


def _read_config(path: Path, notes: list[str]) -> tuple[dict[str, Any], set[str]]:
    """The flat config, with ``${key}`` references resolved, and the keys that were one."""
    text = _read_text(path, notes)
    if text is None:
        return {}, set()
    try:
        config = yaml.load(text, Loader=LOADER)
    except yaml.YAMLError:
        config = None
    if not isinstance(config, dict):
        notes.append("config.yaml is damaged (not a YAML mapping)")
        return {}, set()
    flat = flatten(config)
    follows = {k for k, v in flat.items() if isinstance(v, str) and REF.fullmatch(v)}
    for _ in range(3):  # a reference may name another reference
        for key in follows:
            ref = REF.fullmatch(flat[key]) if isinstance(flat[key], str) else None
            if ref is not None and ref.group(1) in flat:
                flat[key] = flat[ref.group(1)]
    return flat, follows


def _read_metrics(path: Path, notes: list[str]) -> dict[str, float] | None:
    text = _read_text(path, notes)
    if text is None:
        return None
    try:
        metrics = json.loads(text)
    except ValueError as err:
        notes.append(f"metrics.json is damaged ({_reason(err)})")
        return None
    if not isinstance(metrics, dict):
        notes.append("metrics.json is damaged (not a mapping of metric → number)")
        return None
    numbers = {k: float(v) for k, v in metrics.items() if type(v) in (int, float)}  # not bool
    if len(numbers) < len(metrics):
        notes.append(f"metrics.json: not numbers: {', '.join(sorted(set(metrics) - set(numbers)))}")
    return numbers


def _read_text(path: Path, notes: list[str] | None = None) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        if notes is not None:
            notes.append(f"{path.name} can't be read ({_reason(err)})")
        return None


def _reason(err: BaseException) -> str:
    return " ".join(str(getattr(err, "strerror", None) or err).split())


def flatten(node: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.01}}`` → ``{"optimizer.lr": 0.01}`` (lists stay values)."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load(paths: list[str]) -> tuple[list[Run], list[str]]:
    """Every run under ``paths`` (named relative to the path given, or by it when several
    are), and the notes about dirs that are no run."""
    runs, notes = [], []
    for given in paths:
        root = Path(given)
        if not root.exists():
            hint = " (run from the folder mlplab-train wrote logs/ in)" if given == "logs" else ""
            raise ConfigError(f"{given} does not exist{hint}: give a folder of runs")
        if not root.is_dir():
            raise ConfigError(f"{given} is not a folder: give a folder of runs")

        def name(path: Path, root=root, given=given) -> str:
            rel = path.relative_to(root)
            if rel == Path("."):
                return given
            return str(rel if len(paths) == 1 else Path(given) / rel)

        found, member_of, trial_of, found_notes = find(root)
        for path in found:
            runs.append(read_run(path, name(path), member_of.get(path), trial_of.get(path)))
        notes += [f"{name(path)}: {note}" for path, note in found_notes]
    return sorted(runs, key=lambda r: _natural(r.name)), notes


def _natural(text: str) -> list:
    """``job 10`` after ``job 9``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


# ---- choosing, comparing, grouping -------------------------------------------------------
def parse_where(items: list[str]) -> list[tuple[str, str, Any]]:
    """``KEY=VALUE`` → (key, value as typed, value as YAML reads it)."""
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--where {item!r} is invalid: expected KEY=VALUE (optimizer.lr=0.01)"
            )
        try:
            value = yaml.load(text, Loader=LOADER)
        except yaml.YAMLError:
            value = text
        out.append((key, text, value))
    return out


def matches(config: dict[str, Any], key: str, text: str, value: Any) -> bool:
    """Whether the config's ``key`` holds ``value`` (``0.01`` matches ``1.0e-02``)."""
    if key not in config:
        return False
    have = config[key]
    if _key(have) == _key(value) or _text(have) == text:
        return True
    a, b = _as_number(have), _as_number(value)
    return a is not None and a == b


def _as_number(value: Any) -> float | None:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def differing(runs: list[Run]) -> list[str]:
    """The config keys whose values are not the same in every run that has a config; a key that
    follows another one (``data.seed: ${seed}``) in every run is left to that one."""
    having = [run for run in runs if run.config]
    keys = dict.fromkeys(key for run in having for key in run.config)
    return [
        key
        for key in keys
        if key not in OWN
        and len({_key(run.config.get(key, MISSING)) for run in having}) > 1
        and not all(key in run.follows for run in having if key in run.config)
    ]


def _key(value: Any) -> Any:
    """A value's identity (exact, unlike what the table shows), hashable."""
    if value is MISSING or value is None or isinstance(value, str | int | float | bool):
        return (type(value).__name__, value)
    return json.dumps(value, sort_keys=True, default=str)


def _text(value: Any) -> str:
    """A config value as the table shows it: YAML's spelling of null, true and lists."""
    if value is MISSING:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None or isinstance(value, bool | list | dict):
        return json.dumps(value)
    return str(value)


def check_known(flag: str, key: str, known: list[str]) -> None:
    """A ConfigError naming ``key``'s closest known key, unless it is known."""
    if key in known:
        return
    # A key that begins the one typed (test/acc for test/accuracy) before difflib's guess.
    close = sorted((k for k in known if key.startswith(k) or k.startswith(key)), key=len)[-1:]
    close = close or difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known[:12])}"
    raise ConfigError(f"{flag} {key} is not a key of the runs shown: {hint}")


def sort_rows(rows: list[dict], keys: list[str], desc: bool = False) -> list[dict]:
    """Rows by ``keys``: numbers as numbers, text in natural order, missing values and NaN last
    either way."""
    present = [r for r in rows if not _empty(r.get(keys[0]))]
    missing = [r for r in rows if _empty(r.get(keys[0]))]
    present.sort(key=lambda r: [_order(r.get(k)) for k in keys], reverse=desc)
    return present + missing


def _order(value: Any) -> tuple:
    number = _as_number(value)
    if number is not None and not math.isnan(number):
        return (0, number)
    return (2,) if _empty(value) else (1, _natural(_text(value)))


def _empty(value: Any) -> bool:
    return value is None or value is MISSING or (isinstance(value, float) and math.isnan(value))


def group_rows(runs: list[Run], by: list[str], metrics: list[str]) -> list[dict]:
    """Per group of equal ``by`` values: its ok runs' mean, std (ddof=1) and count of every
    metric — ``mean_and_std``, as ``seeds=``/``cv=`` report them — and the runs left out."""
    import pandas as pd  # only when grouping: it takes a while to import

    from mlplab.population.stats import mean_and_std

    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(_key(run.config.get(k, MISSING)) for k in by), []).append(run)
    rows = []
    for group in groups.values():
        ok = [run for run in group if run.status == "ok"]
        left = Counter(run.status for run in group if run.status != "ok")
        table = pd.DataFrame(
            [{"status": "ok"} | run.metrics for run in ok], columns=["status", *metrics]
        )
        stats = mean_and_std(table)
        row = {k: group[0].config.get(k, MISSING) for k in by}
        row |= {"runs": len(ok), "left_out": ", ".join(f"{n} {s}" for s, n in left.items())}
        for m in metrics:
            row |= {m: stats.get(m, math.nan), f"{m}.std": stats.get(f"{m}.std", math.nan)}
            row[f"{m}.n"] = int(table[m].notna().sum())
        rows.append(row)
    return rows


# ---- writing ------------------------------------------------------------------------------
def table(rows: list[dict], keys: list[str], metrics: list[str], by: list[str], markdown: bool):
    """The rows as printed: aligned columns, or Markdown; metrics right-aligned."""
    if by:
        header = [*keys, "runs", "left out", *metrics]
        cells = [
            [*(_text(r[k]) for k in keys), str(r["runs"]), r["left_out"]]
            + [_stat(r[m], r[f"{m}.std"], r[f"{m}.n"], r["runs"]) for m in metrics]
            for r in rows
        ]
    else:
        header = ["run", "status", *keys, *metrics]
        cells = [
            [r["run"], r["status"], *(_text(r[k]) for k in keys)]
            + ["" if math.isnan(r[m]) else f"{r[m]:.4f}" for m in metrics]
            for r in rows
        ]
    right = [name in metrics or name == "runs" for name in header]
    if markdown:
        rule = ["---:" if number else "---" for number in right]
        lines = [header, rule, *cells]
        return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in lines)
    widths = [max(map(len, column)) for column in zip(header, *cells, strict=True)]

    def line(row: list[str]) -> str:
        padded = (
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, cells)])


def _stat(mean: float, std: float, n: int, runs: int) -> str:
    if n == 0:
        return ""
    text = f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"
    return text if n == runs else f"{text} (n={n})"


def _record(row: dict) -> dict:
    """A row for JSON and CSV: NaN and missing values → None."""
    return {k: None if _empty(v) else v for k, v in row.items()}


def write_csv(rows: list[dict], file) -> None:
    writer = csv.DictWriter(file, list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = _record(row).items()
        writer.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in values})


def check_outside(flag: str, file: Path, runs: list[Run]) -> None:
    """Refuse an output file inside a run dir (this command only reads them) or in a folder
    that isn't there (before the table is printed, not after)."""
    target = file.resolve().parent
    if not target.is_dir():
        raise ConfigError(f"{flag} {file} is invalid: the folder {target} does not exist")
    if file.is_dir():
        raise ConfigError(f"{flag} {file} is invalid: it is a folder; name a file in it")
    for run in runs:
        folder = run.path.resolve()
        if target == folder or folder in target.parents:
            raise ConfigError(
                f"{flag} {file} is inside the run dir {run.path}: mlplab-runs never writes into "
                "a run dir; choose another path"
            )


# ---- curves -------------------------------------------------------------------------------
def curve(run: Run, metric: str, tables: dict) -> Any:
    """The run's ``metric`` per epoch (a pandas Series), or None without one; ``tables`` caches
    the CSV files read."""
    import pandas as pd

    file, member = run.history
    if file not in tables:
        tables[file] = None
        try:
            tables[file] = pd.read_csv(file)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, UnicodeDecodeError) as err:
            run.notes.append(f"{file.name} can't be read ({_reason(err)})")
    table = tables[file]
    needed = {metric, "epoch"} | ({"member"} if member is not None else set())
    if table is None or not needed <= set(table.columns):
        return None
    if member is not None:
        table = table[table["member"] == member]
    # A CSV log has a row per logging call (train, val, test apart): an epoch's first values.
    values = table.groupby("epoch")[metric].first()
    values = values[values.map(math.isfinite)]  # a diverged run: up to its last finite value
    return values if len(values) else None


def plot(runs: list[Run], metric: str, file: Path, by: list[str], labels: dict) -> Path:
    """One PNG: each run's curve of ``metric``, or with ``by`` each group's mean ± std band
    over its ok runs (sample std, as in the table). A y axis spanning more than 100× is
    logarithmic (a run far off would flatten the others)."""
    import pandas as pd
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0, 5.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    tables: dict = {}
    drawn = []
    if by:
        groups: dict[tuple, tuple[list, list]] = {}  # as group_rows: exact, hashable keys
        for run in runs:
            values = curve(run, metric, tables) if run.status == "ok" else None
            if values is not None:
                shown = [run.config.get(k, MISSING) for k in by]
                groups.setdefault(tuple(map(_key, shown)), (shown, []))[1].append(values)
        for group, curves in sorted(groups.values(), key=lambda g: [_order(v) for v in g[0]]):
            frame = pd.concat(curves, axis=1)  # (epochs, runs)
            mean, std = frame.mean(axis=1), frame.std(axis=1, ddof=1)
            label = ", ".join(f"{k}={_text(v)}" for k, v in zip(by, group, strict=True))
            (line,) = ax.plot(mean.index, mean, label=f"{label} (n={frame.shape[1]})")
            ax.fill_between(mean.index, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            drawn += [mean - std.fillna(0), mean + std.fillna(0)]
        title = f"{metric}: mean ± std over the ok runs of each group"
    else:
        for run in runs:
            values = curve(run, metric, tables)
            if values is not None:
                ax.plot(values.index, values, label=labels[run.name], marker=".")
                drawn.append(values)
        title = f"{metric}: {len(drawn)} runs"
    if not drawn:
        raise ConfigError(
            f"--plot {metric}: no run shown has a {metric} history (its csv/metrics.csv, or its "
            "population's metrics.csv)"
        )
    low, high = min(v.min() for v in drawn), max(v.max() for v in drawn)
    if low > 0 and high > 100 * low:
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel=metric, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(drawn) <= 40:
        ax.legend(fontsize="small")
    fig.savefig(file)
    return file


# ---- the command --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mlplab-runs",
        description="List, compare, group and plot the runs under PATHS (default: logs/).",
    )
    add = parser.add_argument
    add("paths", nargs="*", metavar="PATHS", help="folders to look in (default: logs)")
    add(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep runs whose config has KEY=VALUE (repeatable)",
    )
    add("--status", nargs="+", choices=STATUSES, help="keep runs with these statuses")
    add("--sort", metavar="KEY", help="sort by a metric or config key")
    add("--desc", action="store_true", help="sort in descending order")
    add("--metrics", nargs="+", metavar="METRIC", help="the metrics to show (default: all)")
    add("--group-by", nargs="+", default=[], metavar="KEY", help="mean ± std per group")
    add("--plot", metavar="METRIC", help="draw the runs' (or groups') curves of METRIC")
    add("--plot-file", metavar="FILE", help="the PNG --plot writes (default: runs_<metric>.png)")
    add("--csv", metavar="FILE", help="also write the table as CSV (- for stdout)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="print a Markdown table")
    out.add_argument("--json", action="store_true", help="print JSON records")
    return parser


def show(args: argparse.Namespace) -> None:
    paths, by = args.paths or ["logs"], args.group_by
    runs, notes = load(paths)
    where = parse_where(args.where)
    if runs:
        known = list(dict.fromkeys(key for run in runs for key in run.config))
        for flag, key in [("--where", w[0]) for w in where] + [("--group-by", k) for k in by]:
            check_known(flag, key, known)
    runs = [run for run in runs if all(matches(run.config, *w) for w in where)]
    runs = [run for run in runs if run.status in (args.status or STATUSES)]
    metrics = sorted({m for run in runs for m in run.metrics})
    if runs:
        for m in args.metrics or []:
            check_known("--metrics", m, metrics)
    metrics = args.metrics or metrics

    keys = by or differing(runs)
    if by:
        rows = group_rows(runs, by, metrics)
    else:
        rows = [
            {"run": run.name, "status": run.status}
            | {key: run.config.get(key, MISSING) for key in keys}
            | {m: run.metrics.get(m, math.nan) for m in metrics}
            | {"note": "; ".join(run.notes), "path": os.path.abspath(run.path)}
            for run in runs
        ]
    if args.sort:
        check_known(
            "--sort", args.sort, [*metrics, *keys, *(["runs"] if by else ["run", "status"])]
        )
        rows = sort_rows(rows, [args.sort], args.desc)
    elif by:
        rows = sort_rows(rows, by)
    plot_file = None
    if args.plot:
        plot_file = Path(args.plot_file or f"runs_{args.plot.replace('/', '_')}.png")
        check_outside("--plot-file", plot_file, runs)
    if args.csv and args.csv != "-":
        check_outside("--csv", Path(args.csv), runs)

    # Machine-readable output on stdout keeps it alone there: the rest goes to stderr.
    side = sys.stderr if args.json or args.csv == "-" else sys.stdout
    if args.csv == "-":
        write_csv(rows, sys.stdout)
    elif args.csv:
        with open(args.csv, "w", newline="") as f:
            write_csv(rows, f)
    if args.json:
        print(json.dumps([_record(row) for row in rows], indent=2))
    elif args.csv != "-" and runs:
        print(table(rows, keys, metrics, by, args.markdown))
        counts = Counter(run.status for run in runs)
        statuses = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
        grouped = f" in {len(rows)} groups by {', '.join(by)}" if by else ""
        print(f"{len(runs)} runs{grouped} ({statuses})")
    elif args.csv != "-":
        filtered = " match" if args.where or args.status else ""
        print(f"no runs under {', '.join(paths)}{filtered}")
    if plot_file is not None:
        labels = {run.name: _label(run, keys) for run in runs}
        print(f"plot: {plot(runs, args.plot, plot_file, by, labels)}", file=side)
    if args.csv and args.csv != "-":
        print(f"csv: {args.csv}", file=side)
    for note in [f"{run.name}: {note}" for run in runs for note in run.notes] + notes:
        print(f"note: {note}", file=side)


def _label(run: Run, keys: list[str]) -> str:
    """A run's legend entry: its values of the differing keys (few), else its name."""
    if 0 < len(keys) <= 3:
        return ", ".join(f"{k.split('.')[-1]}={_text(run.config.get(k, MISSING))}" for k in keys)
    return run.name


def main(argv: list[str] | None = None) -> None:
    with clean_exit():
        show(build_parser().parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
