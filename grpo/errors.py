"""The one exception type for mistakes in what the user gave us (recipe, paths, data files).

Launchers catch `UserError`, print its message without a traceback and exit with code 2, so a bad
recipe or a malformed data file reads as an instruction to fix, not as a crash. `RunFailed` is a run that
started well and could not go on (ranks that stopped keeping up, a loss that stays non-finite): its
message says what happened and where, and the launchers exit with its code.
"""


class UserError(Exception):
    """Bad input from the user: the message says what was wrong, where, and how to fix it."""

    exit_code = 2


class RunFailed(Exception):
    """A run that cannot go on (not a mistake in the input): the message names the step, rank and phase."""

    exit_code = 3
