"""The command line's shared parts: the parser class, subcommand and argument helpers."""

from __future__ import annotations

import argparse
import re
import sys
import textwrap

from videogen.errors import UsageError

FMT = argparse.RawDescriptionHelpFormatter
# An example, not utils.config.shipped_configs(): importing omegaconf would slow --help.
SHIPPED = "e.g. tiny, shapes (videogen/configs)"


def doc(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


class Parser(argparse.ArgumentParser):
    """argparse, whose errors add a hint when a prompt that begins with '-' was read as an
    option (`videogen generate "-red"`); subcommand parsers are of this class too."""

    def __init__(self, *args, **kwargs):
        self.option_strings: list = []
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.option_strings += action.option_strings
        return action

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        super().error(message + dash_hint(self, message, getattr(self, "_given", [])))


def dash_hint(parser: "Parser", message: str, given: list) -> str:
    """'; ...' telling how to pass the first word-like argument that begins with '-' and is
    no option of `parser` (or '' when there is none)."""
    options = parser.option_strings
    for arg in given:
        name = arg.split("=", 1)[0]
        if not (arg[:1] == "-" and arg.lstrip("-")[:1].isalpha()):
            continue
        if " " not in name and (name.startswith("--") or any(option.startswith(name) for option in options)):
            continue  # an option, an abbreviation of one, or a mistyped --option
        option = re.match(r"argument (--[\w-]+)", message)
        if option:
            return f"; a value that begins with '-' goes after '=': {option.group(1)}='{arg}'"
        prog = parser.prog if " " in parser.prog else f"{parser.prog} {given[0]}"  # top level: add the command
        return f"; a prompt that begins with '-' goes after --, last: {prog} [options] -- '{arg}'"
    return ""


def check_utf8(args, *names: str) -> None:
    """Text for the model must be UTF-8: bytes that are not (a terminal in another
    encoding, a file name pasted in) reach Python as lone surrogates, which the tokenizer
    and every file we write would choke on, later and with a traceback."""
    for name in names:
        text = getattr(args, name, None) or ""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            what = "the prompt" if name == "prompt" else f"--{name.replace('_', '-')}"
            code = ord(text[err.start])  # U+DC80..U+DCFF: the undecodable byte, escaped
            bad = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
            raise UsageError(f"{what} is not valid UTF-8 ({bad} at character {err.start + 1}); "
                             "type it in a UTF-8 terminal (check the locale: LANG=C.UTF-8)") from None


def command(sub, name: str, help: str, description: str, run) -> argparse.ArgumentParser:
    """A subcommand `name` whose `--help` shows `description` and which calls `run(args)`."""
    p = sub.add_parser(name, help=help, formatter_class=FMT, description=doc(description))
    p.set_defaults(func=run)
    return p


def config_arguments(p, what: str, example: str) -> None:
    """The positional config (a YAML file or a shipped name) and its key=value overrides."""
    p.add_argument("config", help=f"{what} YAML config file or shipped config name, {SHIPPED}")
    p.add_argument("overrides", nargs="*", help=f"key=value overrides, e.g. {example}")


def checkpoint_arguments(p, export: str) -> None:
    p.add_argument("--resume", default=None, metavar="latest|DIR",
                   help="resume from the latest checkpoint or a checkpoint directory")
    p.add_argument("--export", default=None, metavar="DIR", help=export)
