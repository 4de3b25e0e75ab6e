"""The one exception type for mistakes a user can fix (bad params, bad data, missing files)."""


class SegpipeError(Exception):
    """A user-facing error: its message is one line that names the thing and the fix."""
