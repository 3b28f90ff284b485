"""`python -m pipeline tune EXPERIMENT [--set ...] [--study DIR] [--workers N] [--trials N] [--storage URL]` and
`python -m pipeline tune --status DIR`.

Everything the user can get wrong (the space, the metric, the counts, the storage, the study directory) is
checked before a directory, a storage or a trial process is created: exit 2, one line, nothing written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import zlib
from pathlib import Path

from pipeline import config as config_lib
from pipeline.config import ConfigError, arguments
from pipeline.core import fileio
from pipeline.tune import space as space_lib
from pipeline.tune.space import TuneError

# Optuna (and NumPy with it) and the modules that use it are imported when the command runs: `python -m
# pipeline --help` and the other commands' argument parsing build this parser too, and stay light.

HELP = "hyperparameter search over the experiment's `tune:` section, a `train` process per trial (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `tune` command's arguments."""
    parser.add_argument("experiment", nargs="?", help="experiment name or YAML path (with a `tune:` section)")
    arguments.add_overrides(parser, "override a config value, e.g. --set tune.trials=8 (repeatable)")
    parser.add_argument("--study", type=Path, help="study directory (default runs/<experiment>/tune-<study_name>)")
    parser.add_argument(
        "--workers", type=arguments.int_at_least(1), default=1, help="trials run at once by this process"
    )
    parser.add_argument(
        "--trials", type=arguments.int_at_least(1), help="COMPLETE + PRUNED trials wanted (default tune.trials)"
    )
    parser.add_argument(
        "--storage", help="database URL shared by several machines (postgresql://...); default: STUDY/journal.log"
    )
    parser.add_argument("--status", type=Path, metavar="DIR", help="report on a study directory and exit")


def run(args: argparse.Namespace, config=None, check=config_lib.from_dict, log=print) -> int:
    """Runs the search (or the status report); returns the exit code.

    Args:
        args: the parsed arguments.
        config: the experiment's config, validated by the CLI (None with --status).
        check: validates a trial's config dict as `train` does and returns the Config; raises ConfigError.

    Raises:
        ConfigError, TuneError: any user error, before anything is written.
    """
    if args.status is not None:
        return status(args.status, log=log)
    import optuna

    from pipeline.tune import search as search_lib
    from pipeline.tune import study as study_lib

    if config is None:
        raise TuneError("tune: name an experiment (or pass --status DIR)")
    if args.trials is not None:
        config = dataclasses.replace(config, tune=dataclasses.replace(config.tune, trials=args.trials))
    tune = config.tune
    base = config_lib.to_dict(config)
    base.pop("tune")
    params = space_lib.parse_space(tune.space, base, check=check)
    space_lib.check_metric(tune.metric, config)
    points = study_lib.distinct_points(params)
    if tune.sampler.name == "grid" and points is None:
        space_lib.grid_values(next(p for p in params if p.type == "float" and p.step is None))  # raises
    if points is not None and tune.trials > points:
        raise ConfigError(f"tune.trials: {tune.trials} exceeds the {points} distinct points of tune.space")
    study_lib.check_storage(args.storage, args.workers)
    study_dir = args.study or study_lib.default_study_dir(config.name, tune.study_name)
    record = study_lib.study_record(config=config, storage=args.storage)
    resuming = study_lib.check_study_dir(study_dir, record)
    storage_url = record["storage"]
    study_lib.check_storage(storage_url, args.workers)
    storage = _storage(storage_url, study_dir) if storage_url else None  # a database is reached before any write

    Path(study_dir).mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(Path(study_dir) / "study.json", record)
    storage = storage or study_lib.open_storage(None, study_dir)
    direction = space_lib.direction(tune.metric, tune.direction)
    existing = 0
    try:
        existing = len(optuna.load_study(study_name=tune.study_name, storage=storage).trials)
    except KeyError:
        pass
    study = optuna.create_study(
        study_name=tune.study_name,
        storage=storage,
        direction=direction,
        sampler=study_lib.make_sampler(record["tune"], params, _seed(tune.sampler.seed, existing, storage_url)),
        pruner=study_lib.make_pruner(record["tune"], config.train.epochs),
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise TuneError(
            f"--storage: study {tune.study_name!r} there is to {study.direction.name.lower()}, "
            f"this experiment's tune.metric {tune.metric!r} to {direction}; use another tune.study_name"
        )
    log(
        f"{'resuming' if resuming else 'starting'} study {tune.study_name!r} in {study_dir}: {tune.trials} trials, "
        f"{args.workers} worker(s), {tune.sampler.name} sampler, {tune.pruner.name} pruner, {direction} {tune.metric}"
    )
    searcher = search_lib.Search(
        study=study, study_dir=study_dir, params=params, record=record, check=check, workers=args.workers, log=log
    )
    try:
        searcher.run()
    finally:
        _finish(study, study_dir, tune.metric, tune.trials, log)
    return 0


def status(study_dir: Path, log=print) -> int:
    """`--status DIR`: the report of a study directory, and best.yaml and HParams brought up to date."""
    import optuna

    from pipeline.tune import study as study_lib

    record = study_lib.read_record(study_dir)
    storage = _storage(record.get("storage"), study_dir)
    try:
        study = optuna.load_study(study_name=record["study_name"], storage=storage)
    except KeyError:
        raise TuneError(f"{study_dir}: its storage holds no study {record['study_name']!r} yet") from None
    _finish(study, study_dir, record["tune"]["metric"], record["tune"]["trials"], log)
    return 0


def _finish(study, study_dir: Path, metric: str, trials: int, log) -> None:
    from pipeline.tune import report as report_lib

    if report_lib.write_best(study, study_dir) is None:
        (Path(study_dir) / report_lib.BEST_FILE).unlink(missing_ok=True)  # never a stale best.yaml
    report_lib.write_hparams(study, study_dir, metric)
    log(report_lib.status_text(study, study_dir, metric, trials).rstrip("\n"))


def _storage(url: str | None, study_dir: Path):
    from pipeline.tune import study as study_lib

    if not url:
        return study_lib.open_storage(None, study_dir)
    for attempt in range(3):  # two machines creating the tables at the same moment: one of them retries
        try:
            return study_lib.open_storage(url, study_dir)
        except Exception as error:  # SQLAlchemy's errors for a bad URL, a missing driver, a refused connection
            if attempt < 2 and "duplicate" in str(error).lower():
                time.sleep(1.0)
                continue
            raise TuneError(
                f"--storage {url}: cannot open it ({type(error).__name__}: {str(error).splitlines()[0]})"
            ) from None


def _seed(seed: int | None, existing: int, storage_url: str | None) -> int | None:
    """The sampler's seed for this process: the configured one on a fresh study, moved on by the trials a
    resumed study holds (a restart does not replay the first proposals), and mixed with the host and pid
    with a shared database (two machines started together must not propose the same sequence)."""
    if seed is None:
        return None
    if storage_url:
        return zlib.crc32(f"{seed}:{os.uname().nodename}:{os.getpid()}".encode()) % 2**31
    return seed + existing
