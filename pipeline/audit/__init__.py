"""`python -m pipeline audit RUN [--split validation|test|train] [--folds K]`: after training, likely label
errors (cleanlab, from out-of-sample predicted probabilities) and outliers (images far from their class in
the model's penultimate-layer embedding space), written to RUN/audit/<split>/.

validation and test: the run's own predictions are out of sample. train: the run has seen those labels, so
`--folds K` trains K models of the same experiment, each without one K-th of the training split, and each
predicts the part it did not see (`folds`); the folds are ordinary runs under RUN/audit/folds/, resumed
where an interrupted audit left them. The work: `label_issues`.
"""

from __future__ import annotations

from pathlib import Path

HELP = "likely label errors and outliers of a trained run's split (cleanlab), in RUN/audit/SPLIT/"
SPLITS = ("validation", "test", "train")


def add_arguments(parser) -> None:
    """Adds RUN, --split, --folds, --fold-epochs and --top to the `audit` sub-parser."""
    parser.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory written by `train`")
    parser.add_argument("--split", choices=SPLITS, default="validation", help="the split to audit (default validation)")
    parser.add_argument(
        "--folds", type=int, metavar="K", help="train: K cross-validated trainings give out-of-sample predictions"
    )
    parser.add_argument(
        "--fold-epochs", type=int, metavar="N", help="epochs of each fold's training (default: the run's)"
    )
    parser.add_argument("--top", type=int, default=24, metavar="N", help="issues and outliers drawn in the PNG grids")


def run(args) -> int:
    """Runs `audit` and prints where its outputs are; exit code 0. Raises UserError subclasses (exit 2)."""
    from pipeline.audit import label_issues

    summary = label_issues.audit_run(
        args.run_dir, split=args.split, folds=args.folds, fold_epochs=args.fold_epochs, top=args.top
    )
    outliers = "no embedding layer found, outliers skipped" if summary["outliers"] is None else summary["outliers"]
    print(
        f"{summary['split']}: {summary['issues']} likely label errors among {summary['images']} images "
        f"({100 * summary['issue_share']:.2f}%), outliers: {outliers}; wrote {summary['out']}/"
        f"label_issues.csv, label_issues.png, class_pairs.csv, outliers.csv, outliers.png, summary.json"
    )
    return 0
