"""schemathesis hooks for hearth's contract run (scripts/schemathesis.sh).

hearth ignores query parameters it does not know, as HTTP APIs do so that old servers
take new clients' requests; a generated "negative" request whose only fault is an extra
parameter is therefore not invalid input, and is left out. Every other kind of invalid
input (wrong types, out-of-range values, bad bodies, bad path parameters) still runs.

Header values that are not HTTP field values are left out too (see _is_field_value).
"""

import schemathesis


@schemathesis.hook
def filter_query(context, query):
    if not query:
        return True
    known = {parameter.name for parameter in context.operation.query}
    return all(name in known for name in query)


def _is_field_value(value):
    """RFC 9110 field-value characters: visible ASCII, space and tab (hearth's headers
    are ASCII). Anything else is not HTTP: the server's HTTP parser refuses it with a bare
    400 before any of hearth's code runs, so there is no API answer to check."""
    return isinstance(value, str) and all(c == "\t" or " " <= c <= "~" for c in value)


@schemathesis.hook
def filter_headers(context, headers):
    return not headers or all(_is_field_value(v) for v in headers.values())
