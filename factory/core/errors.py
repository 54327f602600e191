"""The one base class for user mistakes: shown as one line, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (a file, a field, a product, a setting), named in the message.

    The CLI prints it as one red line plus `hint`; Prefect's logs and the run's state message
    show the same line without a traceback (see factory.adapters.prefect_env).
    """

    hint = "fix the input named above"
