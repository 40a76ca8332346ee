"""The one exception type for mistakes a user can make (bad prompt, path, size, key, file).

The CLI catches it at the edge and prints its message as one line, exit status 2.
Anything else is a bug and stays loud.
"""


class UsageError(ValueError):
    """A user-fixable mistake; the message says what to change."""
