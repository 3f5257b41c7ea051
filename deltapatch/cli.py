"""Entry-point plumbing shared by ``deltapatch.train``, ``deltapatch.evaluate`` and
``deltapatch.summary``: where the configs live, the Hydra app decorator, user-fixable errors as one
clear line and a non-zero exit, and the one check Hydra cannot make itself (a writable run dir)."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, DeltaPatchError, ResourceError

EXIT_USER_ERROR = 2
# The configs: `conf/` at the top of the repository, reached through the `deltapatch/conf` symlink;
# in an installed wheel `deltapatch/conf` is a real folder (setuptools copies what the link points to).
CONF_DIR = (Path(__file__).resolve().parent / "conf").resolve()


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


# ------------------------------------------------------------------ numeric config-group options
def allow_numeric_group_choices() -> None:
    """Let ``n_deltas=4`` (and ``-m n_deltas=1,2,4``) pick ``conf/n_deltas/4.yaml``.

    Hydra 1.3 parses ``4`` as an int, and its defaults-list builder refuses any group choice that
    is not a string ("Config group override must be a string or a list. Got int"); upstream's answer
    is to quote the value (``n_deltas='4'``). Here a number given to a config group is read as the
    option of that name instead, before Hydra checks it. Every process that composes configs needs
    it, so it is applied when this module is imported (each entry point, the test fixtures, and a
    SLURM job, which unpickles its task function and with it this module). Idempotent.
    """
    from hydra._internal import defaults_list

    overrides_cls = defaults_list.Overrides
    if getattr(overrides_cls, "_deltapatch_numeric_choices", False):
        return
    original_init = overrides_cls.__init__

    def __init__(self, repo, overrides_list):  # noqa: N807 - wraps Overrides.__init__
        for o in overrides_list:
            value = getattr(o, "_value", None)
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and not o.is_sweep_override() and repo.group_exists(o.key_or_group)):
                o._value = str(value)
        original_init(self, repo, overrides_list)

    overrides_cls.__init__ = __init__
    overrides_cls._deltapatch_numeric_choices = True


allow_numeric_group_choices()


# ------------------------------------------------------------------ the Hydra app
def hydra_app(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """``@hydra.main`` for a deltapatch command: configs from :data:`CONF_DIR`, so Hydra's own flags
    (``--help``, ``--hydra-help``, ``--cfg job|hydra|all``, ``--info``, ``-m``, ``--resolve``) work
    the same from a checkout and from an installed wheel."""
    return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)


def call_with_argv(app: Callable[[], Any], argv: list[str] | None) -> Any:
    """Run a Hydra app on ``argv`` (default: the process's own command line)."""
    if argv is None:
        return app()
    saved = sys.argv
    sys.argv = [saved[0] if saved else "deltapatch", *argv]
    try:
        return app()
    finally:
        sys.argv = saved


# ------------------------------------------------------------------ what Hydra cannot check
def check_writable(path: str | os.PathLike) -> None:
    """Creating ``path`` and a file in it must work (tried for real: root ignores mode bits), or
    nothing can be saved. What the check creates is removed again."""
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
            shutil.rmtree(top, ignore_errors=True)


class OutputDirCheck(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): refuse an unwritable run or sweep dir with one
    line before Hydra creates it (Hydra itself would fail with a traceback halfway in)."""

    def _check(self, config: DictConfig, key: str) -> None:
        try:
            path = OmegaConf.select(config, key, throw_on_resolution_failure=True)
        except Exception:  # an interpolation that needs the running job: Hydra reports it
            return
        if path is None:
            return
        try:
            check_writable(path)
        except ConfigError as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            fail(str(e).replace("hydra.run.dir", key))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")
