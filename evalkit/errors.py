"""The one error type the CLI turns into a one-line message and exit code 2."""


class KitError(Exception):
    """A problem the user can act on: bad input, missing file, incomplete run.

    The message is a full sentence naming the file, partition or option.
    """
