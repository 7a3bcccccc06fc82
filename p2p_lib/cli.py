"""The `p2p` command (hand-written plumbing): each subcommand lives in the module that owns it.

A module in COMMAND_MODULES defines `register_cli(subparsers)`, which adds its subcommand(s) and
sets `func` to a callable that takes the parsed arguments and returns the exit status.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "p2p_lib.download",   # p2p download
    "p2p_lib.checkdata",  # p2p check-data
    "p2p_lib.combine",    # p2p combine
    "p2p_lib.makepairs",  # p2p make-pairs
    "p2p_lib.engine",     # p2p train
    "p2p_lib.evaluate",   # p2p test, p2p translate
    "p2p_lib.pretrained",  # p2p download-model
    "p2p_lib.modelexport",  # p2p export
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2p", description="pix2pix from scratch: data, training and inference from the command line.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
