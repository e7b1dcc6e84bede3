"""A command plugin: ``grefine hello [--name NAME]``."""

from grefine_core import hookimpl


def hello_main(argv):  # gets everything after "grefine hello"
    import argparse

    parser = argparse.ArgumentParser(prog="grefine hello")
    parser.add_argument("--name", default="world")
    args = parser.parse_args(argv)
    print(f"hello, {args.name}")
    return 0


@hookimpl
def grefine_register_commands():
    return {"hello": ("say hello (grefine hello --help)", hello_main)}
