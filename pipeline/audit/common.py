"""What `label_issues` and `folds` share: the error class and the one call of the `Splits` constructor."""

from __future__ import annotations

from pipeline.core import errors


class AuditError(errors.UserError):
    """A run that cannot be audited as asked (the message says why and what to do); exit code 2."""


def load_splits(config):
    """The run's splits as training carved them: the one place this package builds `Splits`."""
    from pipeline.data.splits import Splits

    return Splits.from_config(config, log=lambda message: None)
