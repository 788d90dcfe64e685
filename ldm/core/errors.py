"""The one exception type for user mistakes, and a library's exception as one line of a message.

Anything raised as `LdmError` is a problem with the user's input (a config key, a path, a
dataset, a prompt). The `ldm` command prints it as one line and exits non-zero, with no traceback.
Bugs in ldm itself stay ordinary exceptions, so their tracebacks are kept.

When a library (diffusers, transformers, the hub, datasets, yaml) refuses the user's input, its
exception becomes an LdmError quoting one line of it:

    except OSError as err:
        raise LdmError(f"cannot load the autoencoder in {path}: {first_line(err)}") from None
"""


class LdmError(Exception):
    """A user-facing error: the message names the problem and where it is."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of `err`'s message, or its type's name when the message is empty
    (libraries do raise `OSError()`), so that quoting an exception never fails itself."""
    return _message_line(err) or type(err).__name__


def type_and_first_line(err: BaseException) -> str:
    """"TypeName: first line of the message", or the type's name alone when the message is empty."""
    line = _message_line(err)
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


def _message_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), "")
