"""The error types the CLI turns into a one-line message and an exit code.

Exit codes: 0 PASS (or nothing to score yet), 1 a scored FAIL, 2 a KitError, 3 a partition
another live launch owns, 4 `status`: some partition needs a resume (cli.NEEDS_RESUME),
75 preempted (SIGTERM/SIGINT: state kept, rerun to resume).
"""


class KitError(Exception):
    """A problem the user can act on: bad input, missing file, incomplete run.

    The message is a full sentence naming the file, partition or option.
    """
    exit_code = 2


class PartitionOwned(KitError):
    """Another live process runs this partition: refused, its files untouched."""
    exit_code = 3


class Preempted(KitError):
    """Stopped by SIGTERM/SIGINT after saving its state; the same command resumes.
    75 = EX_TEMPFAIL: schedulers and wrappers read it as 'try again'."""
    exit_code = 75
