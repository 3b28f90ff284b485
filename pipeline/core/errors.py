"""User errors and the "did you mean" hint, importable without TensorFlow.

Every mistake a user can fix (a bad config key, a missing dataset, a run directory that belongs to
another config, an unreadable file) raises a subclass of `UserError`. The CLI prints its message as
is and exits with code 2, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """Base class of every error whose message is meant for the user as is (exit code 2)."""


class UnknownNameError(UserError, KeyError):
    """A name that no registered builder has (a model, a dataset). Also a KeyError, for code that looks
    names up; printed without the quotes KeyError puts around its message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def did_you_mean(word, candidates, prefix: str = "") -> str:
    """' (did you mean 'PREFIX<closest>'?)' for the closest candidate, or '' when none is close.

    Args:
        word: what the user wrote (converted with str()).
        candidates: the allowed names (any iterable; non-strings are converted with str()).
        prefix: put before the suggestion, e.g. a dotted config path 'train.'.
    """
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""
