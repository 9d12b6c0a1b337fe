"""The one exception type for mistakes in what the user gave us (recipe, paths, data files).

Launchers catch `UserError`, print its message without a traceback and exit with code 2, so a bad
recipe or a malformed data file reads as an instruction to fix, not as a crash.
"""


class UserError(Exception):
    """Bad input from the user: the message says what was wrong, where, and how to fix it."""

    exit_code = 2
