"""Writing iCalendar (RFC 5545) and vCard (RFC 6350) content lines.

Both formats escape TEXT values the same way and fold lines at 75 octets;
the store's address-book cards and the connectors' VTODOs and vCards use
these two functions.
"""

from __future__ import annotations


def escape_text(value: str) -> str:
    """Escape a TEXT value: backslash, comma, semicolon, line breaks."""
    return (
        value.replace("\\", "\\\\")
        .replace(",", "\\,")
        .replace(";", "\\;")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def fold_line(line: str) -> str:
    """Fold a content line at 75 octets without splitting a UTF-8 sequence."""
    data = line.encode("utf-8")
    if len(data) <= 75:
        return line
    out, current, limit = [], b"", 75
    for char in line:
        encoded = char.encode("utf-8")
        if len(current) + len(encoded) > limit:
            out.append(current.decode("utf-8"))
            current, limit = b"", 74  # the leading space of a continuation counts
        current += encoded
    out.append(current.decode("utf-8"))
    return "\r\n ".join(out)
