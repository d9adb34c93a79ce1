"""User-facing errors: bad input raises `UserError`; CLIs print its one line and exit 2."""
from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's files or arguments; its message is one line naming what and where."""
