"""Log lines as JSON objects, one a line, stamped in UTC to the millisecond.

gunicorn.conf.py names ``JsonFormatter`` in its logging config, so the gunicorn
master loads this module before any worker monkey-patches: it imports only the
standard library (see app/settings.py).
"""
import json
import logging
import sys
import time

# gunicorn access-log atoms worth a field of their own in a JSON line.
ACCESS_FIELDS = {
    "h": "remote", "m": "method", "U": "path", "s": "status", "B": "bytes", "D": "duration_us",
    "{x-request-id}o": "request_id", "a": "user_agent",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the request id comes from the request being served."""

    converter = time.gmtime

    def formatTime(self, record, datefmt=None):
        """RFC 3339 in UTC with milliseconds: ``2026-11-23T10:21:05.123Z``."""
        return f"{super().formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}Z"

    def format(self, record):
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            entry["message"] = "request"
            for atom, field in ACCESS_FIELDS.items():
                value = record.args.get(atom)
                if value not in (None, "-"):
                    entry[field] = value
        else:
            entry["message"] = record.getMessage()
        request_id = getattr(record, "request_id", None) or _current_request_id()
        if request_id:
            entry.setdefault("request_id", request_id)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _current_request_id():
    # Looked up, not imported: in the gunicorn master Flask is not loaded, and
    # there is no request to name.
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_request_context():
        return flask.g.get("request_id")
    return None
