"""``python -m pipeline <command>``: thin entry points over the data tools and the bundle workflows."""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pipeline import BUNDLE_NAME, __version__, default_bundle_dir
from pipeline.overrides import config_ids, flag_overrides
from pipeline.user_errors import UserError, find_user_error

# Modules under pipeline/commands, in the order `--help` lists them; each registers its own (hyphenated) name.
COMMANDS = (
    "synth",
    "prepare",
    "download",
    "train",
    "evaluate",
    "crossval",
    "infer",
    "ensemble",
    "dicom",
    "dicomweb",
    "serve",
    "demo",
    "export",
    "check",
    "fetch_weights",
)


def version_text() -> str:
    """The package version and the shipped bundle's version (read from its metadata, without importing MONAI)."""
    metadata = default_bundle_dir() / "configs" / "metadata.json"
    bundle = json.loads(metadata.read_text(encoding="utf-8"))["version"] if metadata.is_file() else "not found"
    return f"pipeline {__version__}, bundle {BUNDLE_NAME} {bundle}"


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``error:`` line, as every other error of the commands is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; `{self.prog} --help` lists the options\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; building it imports neither MONAI nor torch, so ``--help`` answers at once."""
    parser = CommandParser(
        prog="python -m pipeline",
        description="Brain tumour segmentation in 2D MRI slices with a MONAI bundle and a custom U-Net.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of every error, the user's faults included"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"pipeline.commands.{name}")
        command = module.add_parser(subparsers)
        options = [option[2:] for action in command._actions for option in action.option_strings if option[:2] == "--"]
        command.set_defaults(run=module.run, options=options)
    return parser


def refuse_unknown_options(extra: Sequence[str], args: argparse.Namespace) -> None:
    """Refuse an ``--OPTION`` the command does not have and no bundle config names, with the nearest option.

    Options that name a config key, or come nearer to one than to any option, are left to the command, which
    checks them against its own configs (and names the nearest key). A command that takes no overrides refuses
    every unknown argument here.
    """
    takes_overrides = getattr(args, "accepts_overrides", False)
    keys = bundle_config_keys(getattr(args, "bundle", default_bundle_dir())) if takes_overrides else set()
    for token in extra:
        name = token[2:].split("=", 1)[0].replace("::", "#")
        if not token.startswith("--") or name in keys:
            continue
        nearest = difflib.get_close_matches(name, [*args.options, *keys], n=1)
        if not takes_overrides or (nearest and nearest[0] in args.options):
            hint = f"; did you mean --{nearest[0]}?" if nearest else ""
            raise UserError(f"unknown option --{name}{hint}")
    if not takes_overrides and extra:
        raise UserError(f"unexpected argument {extra[0]!r}")


def bundle_config_keys(bundle: str | Path) -> set[str]:
    """Every key of every config of ``bundle`` (raw JSON, read without MONAI); none when it has no configs."""
    keys: set[str] = set()
    for path in sorted((Path(bundle) / "configs").glob("*.json")):
        try:
            keys.update(key.lstrip("+") for key in config_ids(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue  # the command reading its configs names the file and the fault
    return keys


def require_paths(args: argparse.Namespace) -> None:
    """Refuse, before MONAI and torch are imported, an input path of the command (its ``must_exist``) that is not
    there, or that is neither a regular file nor a folder once links are followed: a named pipe would block the
    command and a device would be read without end."""
    from pipeline.inference.discovery import not_a_regular_file

    for name in getattr(args, "must_exist", ()):
        value = getattr(args, name, None)
        for path in value if isinstance(value, list) else [value]:
            if path is None:
                continue
            if not Path(path).exists():
                raise UserError(f"{path}: no such file or folder")
            if not Path(path).is_dir() and (kind := not_a_regular_file(Path(path))):
                raise UserError(f"{path}: not a regular file or folder ({kind}); it is not opened")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the chosen command and return its exit code.

    An error the user can act on (a ``UserError`` anywhere in the chain of the exception raised) is printed
    as ``error: <message>`` on stderr and gives exit code 1; any other exception keeps its traceback.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.overrides = [*flag_overrides(args), *extra]
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        refuse_unknown_options(extra, args)
        require_paths(args)
        return int(args.run(args) or 0)
    except Exception as error:
        user_error = None if args.debug else find_user_error(error)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
