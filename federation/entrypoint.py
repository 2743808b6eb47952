"""How every command fails: an expected error is one line on stderr and a documented exit status, never a traceback.

Exit status of every script in scripts/:

- 0: done.
- 1: an input was refused: a site's file, record or field (`DataError`), a ledger or
  registry that does not verify, a model file that is missing or damaged, a value the job
  could not use (`ValueError`, `KeyError`, a missing or unreadable file).
- 2: the command line or the config was refused before anything was read or written
  (`ConfigError`: a setting out of range, a name that is unknown or repeated, a path that
  does not exist or is not the folder or regular file the setting expects; a malformed or
  missing argument, as argparse and the governance scripts' key=value parser report it; an
  override or config Hydra cannot compose: an unknown group option, key or malformed override,
  named with the options Hydra lists, see `one_line_compose_errors`; a search the sweeper refuses
  before any trial: a space key the config lacks, an objective metric the run does not report).
  (scripts/diagnose.py's own setting checks, in federation/tasks/diagnosis, raise ValueError: status 1.)

An unexpected error (a bug) keeps Python's traceback, with status 1. `HYDRA_FULL_ERROR=1`
(or `RAREFED_FULL_ERROR=1`) shows the traceback of an expected error too.

Nothing half-written: outputs are written atomically and last, and a Hydra run that fails
takes away what Hydra put into its run folder (`.hydra/`, the job's log) and the folder
itself, when nothing else is in it; otherwise the folder is left whole. A multirun job's
folder stays, as the sweep's record of the failure (scripts/collect_sweep.py).
"""
from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from federation.settings import ConfigError

EXIT_INPUT = 1
EXIT_CONFIG = 2
EXPECTED = (ValueError, KeyError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, MissingMandatoryValue)
"""ValueError covers DataError, ConfigError, LedgerError, RegistryError and GovernanceError."""
FULL_ERROR_FLAGS = ("HYDRA_FULL_ERROR", "RAREFED_FULL_ERROR")
MAX_MESSAGE = 600  # a backstop: messages name places, never dump a record (which may hold patient data)
HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")
COMPOSE_ERRORS = (ConfigCompositionException, OverrideParseException)  # MissingConfigException is a ConfigCompositionException

Task = TypeVar("Task", bound=Callable[..., Any])


def full_error() -> bool:
    return any(os.environ.get(flag) == "1" for flag in FULL_ERROR_FLAGS)


def exit_status(error: BaseException) -> int:
    return EXIT_CONFIG if isinstance(error, (ConfigError, MissingMandatoryValue)) else EXIT_INPUT


def one_line(error: BaseException) -> str:
    """The error as one line: a KeyError's own text without repr quotes, newlines folded, the length capped."""
    if isinstance(error, MissingMandatoryValue):
        text = f"{error.full_key}=???: a required setting has no value (give {error.full_key}=...)"
    elif isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]
    else:
        text = str(error) or type(error).__name__
    text = " ".join(text.splitlines())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def report(error: BaseException) -> int:
    """Print the one line and return the exit status; re-raise instead under HYDRA_FULL_ERROR=1."""
    if full_error():
        raise error
    print(f"error: {one_line(error)}", file=sys.stderr)
    return exit_status(error)


def script(main: Task) -> Task:
    """For an argv script's `main(argv) -> int`: an expected error returns its exit status after one line on stderr."""

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except EXPECTED as error:
            return report(error)

    return guarded  # type: ignore[return-value]


def hydra_task(task: Task) -> Task:
    """For a `@hydra.main` task (decorate it below `@hydra.main`): one line, the exit status, and no run folder left behind."""
    one_line_compose_errors()  # the overrides are composed before the task runs: Hydra's own handling sees them first

    @functools.wraps(task)
    def guarded(cfg):
        try:
            return task(cfg)
        except EXPECTED as error:
            remove_run_folder()
            sys.exit(report(error))
        except Exception:  # a bug: Hydra prints the traceback; the run folder still goes if it holds only Hydra's files
            remove_run_folder()
            raise

    return guarded  # type: ignore[return-value]


def remove_run_folder(run_dir: str | Path | None = None) -> None:
    """Remove a failed job's run folder when it holds only what Hydra wrote at the start; otherwise leave it whole."""
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.MULTIRUN:
            return  # a sweep's job folder is its record: scripts/collect_sweep.py lists the job as failed
        hydra = HydraConfig.get()
        run_dir, log = Path(hydra.runtime.output_dir), f"{hydra.job.name}.log"
    else:
        run_dir, log = Path(run_dir), None
    if not run_dir.is_dir():
        return
    leftovers = {run_dir / name for name in (*HYDRA_FILES, log) if name}
    if any(p not in leftovers and not (p.is_dir() and p.name == ".hydra") or p.is_symlink() for p in run_dir.rglob("*")):
        return  # something of this job's (or someone's) own: keep everything
    for path in leftovers & set(run_dir.rglob("*")):
        path.unlink()
    for folder in sorted((p for p in run_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    run_dir.rmdir()


# ---------------------------------------------------------------- overrides Hydra cannot compose


def one_line_compose_errors() -> None:
    """Have Hydra refuse an override or config it cannot compose in one line, exit status 2 (installed once).

    Hydra parses the overrides and composes the config before the task runs, inside
    `hydra._internal.utils.run_and_report` (which prints several lines, the config search
    path among them, and exits 1) and, for `--help`, in `_run_hydra` itself (a traceback).
    Both are wrapped here so that a composition error is caught before Hydra sees it;
    every other error, and every error under HYDRA_FULL_ERROR=1, goes on to Hydra's own
    handling unchanged. Run, `--multirun`, `--cfg` and `--help` all pass through these two.
    """
    utils, main = importlib.import_module("hydra._internal.utils"), importlib.import_module("hydra.main")
    if getattr(utils.run_and_report, "one_line_compose_errors", False):
        return
    hydra_report = utils.run_and_report

    def run_and_report(func):
        return hydra_report(functools.partial(_compose_in_one_line, func))

    run_and_report.one_line_compose_errors = True  # type: ignore[attr-defined]
    utils.run_and_report = run_and_report
    main._run_hydra = functools.partial(_compose_in_one_line, main._run_hydra)


def _compose_in_one_line(call: Callable[..., Any], *args, **kwargs) -> Any:
    try:
        return call(*args, **kwargs)
    except COMPOSE_ERRORS as error:
        if full_error():
            raise
        print(f"error: {compose_line(error)}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except ConfigError as error:  # a sweeper's own check (a search space, its objective) before any job ran
        sys.exit(report(error))


def compose_line(error: Exception) -> str:
    """`<the override, as typed>: <Hydra's reason, with the options it lists>` on one line."""
    text = str(error).split("Config search path:")[0]
    if isinstance(error, MissingConfigException) and error.options is not None:
        group = _group_of(error.missing_cfg_file)
        options = ", ".join(error.options) or "none"
        text = f"{text.split('Available options')[0].strip()}; available options in '{group}': {options}"
    if isinstance(error.__cause__, OmegaConfBaseException):  # Hydra prints the cause too: its first line says why
        text = f"{text.strip()} ({str(error.__cause__).splitlines()[0]})"
    return f"{_override_named(error)}: {one_line(ValueError(text.strip()))}"


def _override_named(error: Exception) -> str:
    """The command-line override the error is about; else the group or key Hydra names; else `config`."""
    if isinstance(error, OverrideParseException):
        return error.override
    quoted = re.findall(r"'([^'\s]+)'", str(error))
    group = _group_of(getattr(error, "missing_cfg_file", None) or "")
    named = {*quoted, group, getattr(error.__cause__, "full_key", None) or ""} - {""}
    typed = [override for override in _command_line_overrides() if _key_of(override) in named]
    return typed[0] if typed else group or (quoted[-1] if quoted else "config")


def _command_line_overrides() -> list[str]:
    """The overrides on this command line, as Hydra's own argument parser reads them (its flags left out)."""
    from hydra._internal.utils import get_args_parser

    return list(get_args_parser().parse_known_args(sys.argv[1:])[0].overrides or [])


def _key_of(override: str) -> str:
    """`+a.b=1` -> `a.b`; `~a` -> `a`; `hydra/launcher=x` -> `hydra/launcher`; `group@pkg=x` -> `group`."""
    return override.lstrip("~+").split("=", 1)[0].split("@", 1)[0]


def _group_of(config_file: str) -> str:
    """`experiment/nope` -> `experiment`: the config group a missing option was looked for in."""
    return config_file.rsplit("/", 1)[0] if "/" in config_file else ""
