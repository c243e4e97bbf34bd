"""Errors whose message is meant for the user as it is (one line, no traceback)."""


class UserError(Exception):
    """A failure the user can fix: the CLI prints the message and exits with status 1."""


class ModelNotFoundError(UserError):
    """A model name resolves to nothing; the message says which extra or path provides it."""


class SourceError(UserError):
    """An audio source cannot deliver audio (unreadable file, missing device, bad format)."""
