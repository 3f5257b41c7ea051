"""Entry-point plumbing: user-fixable errors become one clear line and a non-zero exit, and the
command line is checked before Hydra starts writing a run dir."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError, DeltaPatchError, ResourceError

EXIT_USER_ERROR = 2
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# Config groups whose options are numbers: Hydra parses `n_deltas=2` as an int and refuses it as
# a group choice, so entry points quote such values before Hydra sees them.
NUMERIC_GROUPS = ("n_deltas",)


def user_error(exc: BaseException) -> DeltaPatchError | None:
    """The :class:`DeltaPatchError` behind ``exc`` (Hydra's instantiate wraps them), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DeltaPatchError):
            return exc
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            return ResourceError(f"out of GPU memory ({str(exc).splitlines()[0][:120]}); "
                                 f"lower dataset.batch_size (e.g. halve it) or use trainer.precision=bf16-mixed")
        exc = exc.__cause__ or exc.__context__
    return None


def fail(message: str) -> None:
    """Print ``error: message`` (first line only) to stderr and exit with code 2."""
    print(f"error: {message.strip().splitlines()[0] if message.strip() else message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def guarded(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Call ``fn``; a user-fixable error becomes ``error: <message>`` on stderr and exit 2.

    ``HYDRA_FULL_ERROR=1`` re-raises instead, for the whole traceback.
    """
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        err = user_error(e)
        if err is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(str(err))


def quote_numeric_groups(args: list[str]) -> list[str]:
    """``n_deltas=2`` -> ``n_deltas='2'``; ``n_deltas=1,2,4`` -> ``n_deltas='1','2','4'``."""
    out = []
    for a in args:
        key, eq, value = a.partition("=")
        if eq and key.lstrip("+~") in NUMERIC_GROUPS and all(v.strip().isdigit() for v in value.split(",")):
            a = f"{key}=" + ",".join(f"'{v.strip()}'" for v in value.split(","))
        out.append(a)
    return out


def group_options(group: str) -> list[str]:
    folder = CONF_DIR / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def check_group_choices(args: list[str]) -> None:
    """Unknown option of a config group (``backbone=resnet19``) -> ConfigError listing the valid ones."""
    for a in args:
        key, eq, value = a.partition("=")
        group = key.lstrip("+~")
        if not eq or "@" in group or not (CONF_DIR / group).is_dir() or group.split("/")[0] == "hydra":
            continue
        if value.startswith(("choice(", "range(", "glob(", "[")) or value in ("null", ""):
            continue
        for v in value.split(","):
            v = v.strip().strip("'\"")
            if not (CONF_DIR / group / f"{v}.yaml").is_file():
                opts = group_options(group)
                hint = ""
                if group == "n_deltas":
                    hint = " (∆-modules on the last n stages; most backbones have 4)"
                raise ConfigError(f"unknown {group} '{v}'; choose one of: {', '.join(opts)}{hint}")


def check_writable(path: str | os.PathLike) -> None:
    """Creating ``path`` and a file in it must work (tried for real: root ignores mode bits), or
    nothing can be saved. What the check creates is removed again."""
    import tempfile

    p = Path(path).absolute()
    top = p
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    created = not top.exists()
    try:
        p.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=p).close()
    except OSError as e:
        raise ConfigError(f"output directory {path} is not writable ({e.strerror}); "
                          f"set hydra.run.dir=/a/writable/dir (or paths.root_dir)") from None
    finally:
        if created and top.exists():
            import shutil

            shutil.rmtree(top, ignore_errors=True)


def preflight(args: list[str], config_name: str = "config") -> list[str]:
    """Check a command line before Hydra runs it; return the args Hydra should get.

    Catches unknown group options, composition errors (typos in keys) and an unwritable run dir
    with one clear line, before any run dir is created.
    """
    args = quote_numeric_groups(args)
    overrides = [a for a in args if not a.startswith("-")]
    try:
        check_group_choices(overrides)
        if "-m" in args or "--multirun" in args:
            return args
        from hydra import compose, initialize_config_dir
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as e:
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            raise ConfigError(" ".join(lines)[:400]) from None
        check_writable(cfg.hydra.run.dir)
    except DeltaPatchError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(str(e))
    return args
