"""The error taxonomy shared by every algorithm.

A `UserError` is caused by what the user gave us (a hyperparameter, a channel, a data file, a
request body): the training job reports it in `/opt/ml/output/failure` without a traceback and the
server answers it with a 4xx. Anything else that escapes is an internal error.
"""


class UserError(ValueError):
    """Bad input from the user. The message must stand on its own: name the hyperparameter,
    the file and line or record, the content type, and what would be valid."""
