"""The ``tim`` command line: ``tim train``, ``tim sample``, ``tim demo`` and ``tim bench``.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and ``run(args) -> int``;
:mod:`tim.cli.main` wires them together and turns user errors (:class:`tim.errors.TimError`) into a
single ``error: ...`` line with exit status 2. Nothing in the library imports this package.
"""
