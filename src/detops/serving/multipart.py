"""multipart/form-data bodies, parsed exactly (RFC 7578). Starlette would need python-multipart, whose package
would overwrite the `multipart` module another dependency (litestar, through evidently) installs; a few exact
lines are safer than that clash. The whole body is in memory already (its size is capped before it is read)."""

from __future__ import annotations

import re

from detops.serving.images import Rejected


def header_parameter(value: str, key: str) -> str | None:
    """`boundary` of `multipart/form-data; boundary=xyz`, `name` of `form-data; name="image"` (not `filename`)."""
    pattern = rf'(?:^|;)\s*{re.escape(key)}\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))'
    match = re.search(pattern, value, flags=re.IGNORECASE)
    if not match:
        return None
    return match.group(1).replace('\\"', '"') if match.group(1) is not None else match.group(2)


def form_fields(body: bytes, content_type: str) -> dict[str, bytes]:
    """Field name -> content (the first part of each name); a malformed body is a 400 that says how."""
    boundary = header_parameter(content_type, "boundary")
    if not boundary:
        raise Rejected(400, "the multipart body has no boundary in its Content-Type")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    parts = (b"\r\n" + body).split(delimiter)
    if len(parts) < 2:
        raise Rejected(400, "malformed multipart body: no part starts with the boundary of its Content-Type")
    fields: dict[str, bytes] = {}
    for part in parts[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter; what follows is the epilogue
        line_end = part.find(b"\r\n")
        head, sep, content = part[line_end + 2:].partition(b"\r\n\r\n") if line_end >= 0 else (b"", b"", b"")
        if not sep:
            raise Rejected(400, "malformed multipart body: a part has no blank line after its headers")
        headers = {}
        for line in head.split(b"\r\n"):
            name, _, text = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = text.strip()
        field = header_parameter(headers.get("content-disposition", ""), "name")
        if field is not None:
            fields.setdefault(field, content)
    else:
        raise Rejected(400, "malformed multipart body: it ends before its closing boundary (truncated upload?)")
    return fields
