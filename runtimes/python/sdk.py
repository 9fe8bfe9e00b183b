"""hearth's Python SDK: what a function can ask of the platform.

Works in every mode the runtime supports:

* handler mode (``def handler(event, context)``) and main mode (``def main(...)``): the
  event and context are also passed as arguments; ``get_input()`` / ``get_context()``
  return the same objects, and ``return_output(x)`` sets the result when the handler
  returns ``None``.
* script mode (``main.py`` runs top to bottom): ``get_input()`` is the event and the
  value passed to ``return_output`` is the result (``null`` if it is never called).

The bootstrap registers this file as the ``sdk`` module before the user's code is
loaded, so a stray ``sdk.py`` in the code package cannot shadow it.
"""

import os
import time

__all__ = ["Context", "get_context", "get_input", "return_output", "output_dir"]

_event = None
_context = None
_output = None
_returned = False


class Context:
    """What the platform tells a handler about the current invocation.

    Attributes: ``request_id``, ``function_name``, ``version`` (int),
    ``memory_limit_mb`` (int), ``deadline_ms`` (unix ms). Also readable like a dict
    (``context["request_id"]``, ``context.get("version")``) for code written against a
    dict-shaped context.
    """

    __slots__ = ("request_id", "function_name", "version", "memory_limit_mb", "deadline_ms")

    _KEYS = (
        "request_id",
        "function_name",
        "version",
        "memory_limit_mb",
        "deadline_ms",
        "remaining_time_ms",
    )

    def __init__(self, request_id, function_name, version, memory_limit_mb, deadline_ms):
        self.request_id = request_id
        self.function_name = function_name
        self.version = version
        self.memory_limit_mb = memory_limit_mb
        self.deadline_ms = deadline_ms

    def remaining_time_ms(self):
        """Milliseconds left before the platform kills the invocation."""
        return max(0, int(self.deadline_ms - time.time() * 1000))

    # The name AWS Lambda's Python context uses.
    get_remaining_time_in_millis = remaining_time_ms

    def as_dict(self):
        """The context as a plain dict (with ``remaining_time_ms`` as of now)."""
        return {key: self[key] for key in self._KEYS}

    def __getitem__(self, key):
        if key == "remaining_time_ms":
            return self.remaining_time_ms()
        if key in self._KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key):
        return key in self._KEYS

    def __iter__(self):
        return iter(self._KEYS)

    def keys(self):
        return list(self._KEYS)

    def items(self):
        return list(self.as_dict().items())

    def __repr__(self):
        return "Context(%r)" % (self.as_dict(),)


def get_input():
    """The event of the current invocation (parsed JSON)."""
    return _event


def get_context():
    """The :class:`Context` of the current invocation."""
    return _context


def return_output(value):
    """Sets the invocation's result (must be JSON-serialisable)."""
    global _output, _returned
    _output = value
    _returned = True


def output_dir():
    """Directory whose files become the invocation's outputs, when the platform set one."""
    return os.environ.get("OUTPUT_DIR")


def _begin(event, context):
    """Called by the bootstrap in the invocation's process, before the user's code runs."""
    global _event, _context, _output, _returned
    _event = event
    _context = context
    _output = None
    _returned = False


def _result():
    """(whether ``return_output`` was called, the value it was given)."""
    return _returned, _output
