"""How the CLI words library messages: options are named by their flags, not their Python names."""

from __future__ import annotations

# Python option names whose flag is not simply `--` + the name with dashes.
CLI_FLAGS = {"n_points": "--points", "templates": "--prompt", "extensions": "--ext"}


def cli_flag(option) -> str:
    """How the CLI spells an option named in an OptionError: `--batch-size`, `--select last`."""
    flag = CLI_FLAGS.get(option.name, "--" + option.name.replace("_", "-"))
    return flag if option.value is None else f"{flag} {option.value}"


def cli_text(message) -> str:
    """A library error or notice as the CLI prints it: options named by their flags."""
    from ..errors import OptionError, OptionText

    return message.render(cli_flag) if isinstance(message, (OptionError, OptionText)) else str(message)
