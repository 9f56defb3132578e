"""The `autojudge` command line: one subcommand per stage.

Each subcommand lives in `autojudge/commands/<name>.py` and exposes
`add_parser(subparsers)`, which registers its arguments and sets `func`. Command
modules import heavy libraries (torch, ray) inside `func`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from autojudge.errors import InputError, ModelPairError
from autojudge.files import is_no_space

COMMANDS = ["run", "toy", "mine", "train", "decode", "eval", "infer", "export", "real", "serve", "hogwild"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autojudge",
        description="AutoJudge lossy speculative decoding: mine labels, train a judge, decode faster.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"autojudge.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"autojudge.commands.{name}":
                raise
            continue  # a stage not built yet
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (InputError, ModelPairError) as err:
        print(f"autojudge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autojudge {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence: a message, not a traceback
        if os.environ.get("AUTOJUDGE_DEBUG"):
            raise
        if is_no_space(err):  # a writer that does not say so itself (`autojudge.files`)
            where = os.path.dirname(os.path.abspath(err.filename)) if getattr(err, "filename", None) else "the device"
            print(f"autojudge {args.command}: error: no space left on {where}", file=sys.stderr)
            return 2
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(
            f"autojudge {args.command}: error: unexpected {type(err).__name__}: {first_line} "
            "(this is a bug or an unchecked input; AUTOJUDGE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
