"""User-facing errors.

Anything a user can cause (a bad file, a wrong shape, an unknown tensor, an invalid config) raises
``UserError`` with ONE line that says what is wrong and what to do. The CLI prints that line and exits
with code 2, without a traceback. Bugs stay ordinary exceptions, with their traceback.
"""


class UserError(ValueError):
    """A mistake in input or configuration; the message is one line: what is wrong, what to do."""
