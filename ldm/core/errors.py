"""The one exception type for user mistakes.

Anything raised as `LdmError` is a problem with the user's input (a config key, a path, a
dataset, a prompt). The `ldm` command prints it as one line and exits non-zero, with no traceback.
Bugs in ldm itself stay ordinary exceptions, so their tracebacks are kept.
"""


class LdmError(Exception):
    """A user-facing error: the message names the problem and where it is."""
