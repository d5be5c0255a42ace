"""The error taxonomy shared by every algorithm.

A `UserError` is caused by what the user gave us (a hyperparameter, a channel, a data file, a
request body): the training job reports it in `/opt/ml/output/failure` without a traceback and the
server answers it with a 4xx. Anything else that escapes is an internal error.
"""


def os_error_text(exc: OSError) -> str:
    """`[Errno 28] No space left on device`, without the file name (the message names it): how
    a fault of the machine or its mounts (a full disk, a read-only mount) is quoted in a
    UserError."""
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno is not None else str(exc)


class UserError(ValueError):
    """Bad input from the user. The message must stand on its own: name the hyperparameter,
    the file and line or record, the content type, and what would be valid."""
