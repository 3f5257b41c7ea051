"""Turning user-fixable errors into one clear line and a non-zero exit."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

from .errors import DeltaPatchError

EXIT_USER_ERROR = 2


def guarded(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Call ``fn``; a :class:`DeltaPatchError` becomes ``error: <message>`` on stderr and exit 2.

    ``HYDRA_FULL_ERROR=1`` re-raises instead, for the whole traceback.
    """
    try:
        return fn(*args, **kwargs)
    except DeltaPatchError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


# Config groups whose options are numbers: Hydra parses `n_deltas=2` as an int and refuses it as
# a group choice, so entry points quote such values before Hydra sees them.
NUMERIC_GROUPS = ("n_deltas",)


def quote_numeric_groups(args: list[str]) -> list[str]:
    """``n_deltas=2`` -> ``n_deltas='2'``; ``n_deltas=1,2,4`` -> ``n_deltas='1','2','4'``."""
    out = []
    for a in args:
        key, eq, value = a.partition("=")
        if eq and key.lstrip("+~") in NUMERIC_GROUPS and all(v.strip().isdigit() for v in value.split(",")):
            a = f"{key}=" + ",".join(f"'{v.strip()}'" for v in value.split(","))
        out.append(a)
    return out
