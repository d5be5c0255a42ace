"""What a request did wrong, as an HTTP status and a message that names the problem and where.

Handlers raise `RequestError`; the app turns it into a JSON body `{"error": message, "status": n}`
and goes on serving. Messages stand on their own: they name the header or the body's format, the
line, record or instance (0-based for instances and records, as the arrays they index; 1-based
for lines, as editors count), and what would be valid.
"""

from __future__ import annotations

BAD_REQUEST = 400
NOT_ACCEPTABLE = 406
PAYLOAD_TOO_LARGE = 413
UNSUPPORTED_MEDIA_TYPE = 415


class RequestError(Exception):
    """A request the server refuses, with the 4xx status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
