"""Writing iCalendar (RFC 5545) and vCard (RFC 6350) content lines.

Both formats escape TEXT values the same way and fold lines at 75 octets;
the store's address-book cards and the connectors' VTODOs and vCards use
these two functions.
"""

from __future__ import annotations

import re

#: a ``;`` that separates parameters (not one inside a quoted parameter value)
PARAM_SPLIT = re.compile(r';(?=(?:[^"]*"[^"]*")*[^"]*$)')


def value_colon(line: str) -> int:
    """Index of the ``:`` that starts the value (quoted parameters may hold ``:``), or -1."""
    if '"' not in line.partition(":")[0]:
        return line.find(":")
    in_quotes = False
    for index, char in enumerate(line):
        if char == '"':
            in_quotes = not in_quotes
        elif char == ":" and not in_quotes:
            return index
    return -1


def split_content_line(line: str) -> tuple[str, list[str], str] | None:
    """``item1.EMAIL;TYPE=work:a@b`` -> ("EMAIL", ["TYPE=work"], "a@b").

    The name is upper-cased and loses a vCard group prefix; parameters stay
    as written.  None when the line has no ``:`` outside quotes.
    """
    colon = value_colon(line)
    if colon < 0:
        return None
    parts = PARAM_SPLIT.split(line[:colon])
    name = parts[0].strip().upper()
    if "." in name:  # vCard groups: item1.EMAIL
        name = name.rsplit(".", 1)[1]
    return name, parts[1:], line[colon + 1:]


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
