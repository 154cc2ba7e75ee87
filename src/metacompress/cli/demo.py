"""``metacompress demo``: the main features end to end on the bundled samples."""

from pathlib import Path

from metacompress.cli.common import Command, add_json


def add_demo_arguments(p):
    p.add_argument("--out", default="demo-output", help="folder for the report")
    add_json(p)


def command_demo(args) -> dict:
    from metacompress.demo import run_demo

    return run_demo(Path(args.out))


COMMANDS = (Command("demo", "run the main features end to end on bundled samples", add_demo_arguments, command_demo),)
