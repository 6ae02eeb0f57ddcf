"""Errors that are the user's to fix: printed as one line by the CLI, never a traceback."""


class UserError(Exception):
    pass
