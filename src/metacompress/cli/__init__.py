"""The ``metacompress`` command: parses arguments and calls the library.

Contract: ``--json`` prints one JSON object as the last line of stdout; progress goes to stderr;
user errors exit with status 2 and one line on stderr.

Layout: one module per command group (``models``, ``codec``, ``archive``, ``bench``, ``demo``), each
listing its ``COMMANDS``; shared helpers in ``common``. Command modules import ``common`` only, and
import the library inside their functions, so that ``metacompress --help`` loads no torch, no
benchmark and no matplotlib, and only the command that runs builds its arguments.
"""

import argparse
import json
import logging
import sys

from metacompress.cli import archive, bench, codec, demo, models
from metacompress.cli.common import OneLineErrorParser, describe_os_error, is_main_process
from metacompress.errors import UserError

COMMANDS = {command.name: command for group in (models, codec, archive, bench, demo) for command in group.COMMANDS}
LOG_LEVELS = {"quiet": logging.ERROR, "verbose": logging.INFO}


class VersionAction(argparse.Action):
    """``--version``: reads the installed version only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version

        print(f"metacompress {version('metacompress')}")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``command`` only that command's arguments (the others are listed
    with their help line but left empty, so their heavy imports are skipped)."""
    parser = OneLineErrorParser(prog="metacompress", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=VersionAction, help="print the version and exit")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log errors only, no warnings")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log progress information too")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for tensor work (default: torch's, one per core); on a machine shared "
                             "with other jobs, fewer threads than cores avoids threads waiting on each other")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)
    for name, spec in COMMANDS.items():
        p = commands.add_parser(name, help=spec.help)
        if command is None or command == name:
            spec.add_arguments(p)
    return parser


def set_threads(threads: int) -> None:
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def command_name(argv: list[str]) -> str:
    """The command ``argv`` asks for: its first word that names one ("" for none; global options
    such as ``--threads N`` come before it and take values)."""
    return next((word for word in argv if word in COMMANDS), "")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(command_name(argv)).parse_args(argv)
        level = next((level for flag, level in LOG_LEVELS.items() if getattr(args, flag)), logging.WARNING)
        logging.basicConfig(level=level, format="metacompress: %(message)s", stream=sys.stderr)
        logging.getLogger("metacompress").setLevel(level if level != logging.WARNING else logging.NOTSET)
        if args.threads is not None:
            set_threads(args.threads)
        summary = COMMANDS[args.command].run(args)
    except UserError as e:
        print(f"metacompress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metacompress: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `metacompress archive list X | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # unwritable folder, disk full, a file where a folder should be: the user's to fix
        print(f"metacompress: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    if getattr(args, "json", False) and is_main_process():
        print(json.dumps(summary), flush=True)
    return 0
