"""Entry point of the ``tim`` command (``tim = tim.cli.main:main`` in pyproject.toml).

Usage errors (bad flags, bad values, existing outputs...) print ONE line ``error: <problem>; <fix>``
to stderr and exit with status 2; they never show a traceback. Bugs still raise normally.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from tim import __version__
from tim.cli.parsing import USAGE_ERROR, HelpFormatter, OneLineParser
from tim.errors import TimError

# Subcommands in the order `tim --help` lists them; each module has add_parser() and run().
COMMANDS = ("train", "sample", "demo", "bench", "models", "convert", "autoencoder", "app")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``tim`` parser with every available subcommand.

    Returns:
        The top-level parser; ``args.run`` holds the chosen subcommand's ``run`` function.
    """
    parser = OneLineParser(
        prog="tim",
        description="Transition Models (TiM): train one network that samples with 1, 2, 4 ... or 500 steps.",
        epilog="Run `tim <command> --help` for the options of each command (defaults are shown there). "
        "User errors print one line `error: <problem>; <fix>` and exit with status 2.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tim {__version__}")
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="<command>", parser_class=OneLineParser
    )
    subparsers.required = True
    for name in COMMANDS:
        module = _command_module(name)
        if module is not None:
            module.add_parser(subparsers)
    return parser


def _command_module(name: str):
    """Import ``tim.cli.<name>`` (the module itself imports its heavy dependencies lazily)."""
    try:
        return importlib.import_module(f"tim.cli.{name}")
    except ModuleNotFoundError as error:
        if error.name == f"tim.cli.{name}":  # an optional command that is not installed
            return None
        raise


def _one_line_warning(
    message: Warning | str, category: type[Warning], *args: object, **kwargs: object
) -> str:
    """Warnings for users (e.g. a corrupt checkpoint that is skipped) as ``warning: ...``, without source lines."""
    return f"warning: {message}\n"


def file_system_error(error: OSError) -> str:
    """One line for an ``OSError`` that reached the command: what failed, on which path, and the fix."""
    where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    what = error.strerror or type(error).__name__
    return (
        f"{what}{f': {where}' if where else ''}; free disk space, fix the permissions or remove what is in "
        "the way at that path, then rerun the same command (finished work is kept)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tim`` command.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The process exit status: 0 on success, 2 for user errors, 130 when interrupted.
    """
    # OpenMP threads that spin while waiting make torch 5-7x slower once the cores are busy with
    # other work (measured here: 2 threads on 2 shared cores); sleeping threads cost ~15% CPU instead.
    # Must be set before torch is first imported; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # `tim demo ...` without a demo name runs the digits demo
        from tim.cli.demo import with_default_demo

        argv = with_default_demo(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `tim demo latent --quick KEY=VALUE --seed 1 KEY=VALUE`: argparse ends the KEY=VALUE positional
        # at the first option, so words after an option arrive here; they belong to the overrides.
        if getattr(args, "overrides", None) is None or any(word.startswith("-") for word in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    previous_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return int(args.run(args) or 0)
    except TimError as error:
        sys.stderr.write(f"error: {error}\n")
        return USAGE_ERROR
    except OSError as error:  # a file-system failure no layer put into words: still one line
        sys.stderr.write(f"error: {file_system_error(error)}\n")
        return USAGE_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130  # 128 + SIGINT, the shell convention
    finally:
        warnings.formatwarning = previous_format  # main() may be called in-process (tests, notebooks)


if __name__ == "__main__":
    sys.exit(main())
