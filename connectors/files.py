"""Local files: Maildir, mbox, a folder of .eml files, .ics and .vcf files.

All are incremental: a file that did not change is not read again.

* **Maildir** (``type = "maildir"``, ``path``): the root folder is scope
  ``INBOX``; Maildir++ subfolders (``.Sent``, ``.CRM.Log``) are scopes
  ``Sent`` and ``CRM/Log``.  The local id is the unique part of the file
  name, the etag its flags (``:2,FRS``), so a flag change is a cheap
  :class:`FlagChange` and a move from ``new/`` to ``cur/`` is nothing.  A
  folder whose ``new/`` and ``cur/`` did not change (mtime) is not listed.
* **mbox** (``type = "mbox"``, ``path`` of a file or a folder of them):
  the local id is the byte offset plus a hash of the message; a file that
  only grew is read from where the last run stopped.
* **eml** (``type = "eml"``, ``path`` of a folder, searched recursively):
  the local id is the relative path, the etag mtime and size.
* **ics** / **vcf** (``path`` of a file or a folder): a changed file is
  parsed again as a whole; items that left it are removed.

A file that cannot be parsed becomes a :class:`Failure` with its reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping, cast

from crm_bridge.connectors.base import ConfigError, Connector, SourceUnavailable, SourceView
from crm_bridge.connectors.mailparse import MAX_MESSAGE_BYTES, MailParseError, parse_message
from crm_bridge.crm_core.records import Batch, Failure, FlagChange, Location, Record

MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
#: a directory modified this recently may still change within its mtime tick
_SETTLE_NS = 2_000_000_000

log = logging.getLogger(__name__)


class NotRegularFile(OSError):
    """A path names a FIFO, a socket, a device or a folder where a file was expected."""


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def open_regular(path: Path | str) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file.

    The open itself must not wait: a FIFO without a writer blocks a plain
    ``open()`` for ever (and with it the whole run, which holds the store
    lock), and a device may never end.  So the file is opened with
    ``O_NONBLOCK``, checked with ``fstat`` (the object opened, not the name,
    so a swap between listing and opening cannot fool it) and refused with
    :class:`NotRegularFile` unless it is a regular file; reads of a regular
    file then end at its size.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a file")
            raise NotRegularFile(f"not a regular file ({kind}); not read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _why(exc: OSError) -> str:
    return str(exc) if isinstance(exc, NotRegularFile) else str(exc.strerror or exc)


def _path_option(name: str, options: dict, kind: str) -> Path:
    value = options.get("path")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"sources.{name}.path is missing (the {kind} to read)")
    return Path(value)


def _batch_size(name: str, options: dict) -> int:
    size = options.get("batch_size", 500)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 100_000:
        raise ConfigError(f"sources.{name}.batch_size must be a whole number from 1 to 100000")
    return size


def _excerpt(raw: bytes) -> str:
    head = raw[:300].decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "?" for ch in head)


def _read_mail(path: Path, loc: Location, flags: tuple[str, ...] = ()) -> Record | Failure:
    try:
        with open_regular(path) as fh:
            raw = fh.read(MAX_MESSAGE_BYTES)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        log.warning("cannot read %s: %s", path, _why(exc))
        return Failure(loc, f"cannot read {path.name}: {_why(exc)}")
    try:
        return parse_message(raw, loc, flags, size)
    except MailParseError as exc:
        return Failure(loc, str(exc), _excerpt(raw))
    except Exception as exc:  # a parser bug must not stop the run
        return Failure(loc, f"unexpected parse error: {exc.__class__.__name__}: {exc}", _excerpt(raw))


def _known_maps(view: SourceView, scopes) -> dict[str, Mapping[str, str]]:
    """What the store knows of each of ``scopes``, asked for all at once before the first batch.

    In a reader process (sync/worker.py) the store answers a question only
    after storing every batch sent before it, and meanwhile the reader
    waits: a question at each folder boundary would stall the pipeline once
    per folder (50 folders of 1,000 mails took 1.3x one folder of 50,000).
    Asked up front, the answers are the same (a batch of one scope changes
    no other scope's locations) and reading and storing overlap throughout.
    """
    return {scope: view.known(scope) for scope in scopes}


class _Batcher:
    """Collects records and failures and cuts them into batches."""

    def __init__(self, size: int):
        self.size = size
        self.batch = Batch()
        self.done = 0

    def add(self, item: Record | Failure | FlagChange) -> Batch | None:
        if isinstance(item, Failure):
            self.batch.failures.append(item)
        elif isinstance(item, FlagChange):
            self.batch.changes.append(item)
        else:
            self.batch.records.append(item)
        self.done += 1
        if len(self.batch.records) + len(self.batch.failures) + len(self.batch.changes) >= self.size:
            return self.cut()
        return None

    def cut(self) -> Batch:
        batch, self.batch = self.batch, Batch()
        batch.done = self.done
        return batch


class _PathConnector(Connector):
    """A source read from ``path``: a file, or a folder of files ending in ``suffixes``."""

    what = "file"
    suffixes: tuple[str, ...] = ()
    recursive = True
    option_keys = frozenset({"path", "batch_size"})

    def __init__(self, name, options):
        super().__init__(name, options)
        self.root = _path_option(name, self.options, self.what)
        self.batch_size = _batch_size(name, self.options)

    def files(self) -> list[Path]:
        """The files to read.  Whatever is not a folder is listed, FIFOs
        and devices too: opening them (:func:`open_regular`) refuses them
        with an error for that item instead of skipping them silently."""
        if not self.root.is_dir():
            if self.root.exists() or self.root.is_symlink():
                return [self.root]
            raise SourceUnavailable(f"{self.root} does not exist")
        found = self.root.rglob("*") if self.recursive else self.root.iterdir()
        return sorted(
            p for p in found
            if not p.name.startswith(".") and (not self.suffixes or p.suffix.lower() in self.suffixes)
            and not p.is_dir()
        )


class MaildirConnector(_PathConnector):
    type = "maildir"
    what = "Maildir"

    def folders(self) -> dict[str, Path]:
        if not (self.root / "cur").is_dir() and not (self.root / "new").is_dir():
            raise SourceUnavailable(f"{self.root} is not a Maildir (no cur/ or new/ folder)")
        out = {"INBOX": self.root}
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir():
                if (Path(entry.path) / "cur").is_dir():
                    out[entry.name[1:].replace(".", "/")] = Path(entry.path)
        return out

    def pull(self, cursor: dict | None, view: SourceView) -> Iterator[Batch]:
        cursor = dict(cursor or {})
        folders = self.folders()
        batcher = _Batcher(self.batch_size)
        new_cursor = dict(cursor)
        problems = []
        for scope in sorted(set(view.scopes()) - set(folders)):
            if view.known(scope):
                problems.append(f"folder {scope} is gone from {self.root}; its history is kept")
        listed: list[tuple[str, Path, dict[str, tuple[str, Path]], list[int]]] = []
        total = 0
        for scope, path in folders.items():
            stamps = [os.stat(path / sub).st_mtime_ns if (path / sub).is_dir() else 0 for sub in ("new", "cur")]
            if cursor.get(scope) == stamps:
                continue
            files: dict[str, tuple[str, Path]] = {}
            for sub in ("new", "cur"):
                folder = path / sub
                if not folder.is_dir():
                    continue
                for entry in os.scandir(folder):
                    if entry.name.startswith("."):
                        continue
                    unique, _, info = entry.name.partition(":")
                    files[unique] = (info.partition(",")[2] if info.startswith("2,") else "", Path(entry.path))
            listed.append((scope, path, files, stamps))
            total += len(files)
        knowns = _known_maps(view, [scope for scope, *_ in listed])
        for scope, path, files, stamps in listed:
            known = knowns.pop(scope)
            for unique in sorted(files):
                info, file_path = files[unique]
                etag = f"flags:{info}"
                prior = known.get(unique)
                if prior == etag:
                    continue
                loc = Location(scope, unique, etag)
                flags = tuple(MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS)
                item = FlagChange(loc, flags) if prior is not None else _read_mail(file_path, loc, flags)
                out = batcher.add(item)
                if out is not None:
                    out.total = total
                    yield out
            gone = [Location(scope, u) for u in known if u not in files]
            if gone and not files and len(known) > 1:
                problems.append(f"folder {scope} lists empty; nothing removed")
                gone = []
            batcher.batch.removed.extend(gone)
            # a folder changed within the last moments may change again within its mtime tick
            fresh = any(time_ns() - s < _SETTLE_NS for s in stamps)
            new_cursor[scope] = None if fresh else stamps
        final = batcher.cut()
        final.total = total
        final.problems = problems
        final.cursor = {k: v for k, v in new_cursor.items() if k in folders and v is not None}
        yield final


def time_ns() -> int:
    import time

    return time.time_ns()


class EmlConnector(_PathConnector):
    type = "eml"
    what = "folder of .eml files"
    suffixes = (".eml",)

    def scope_of(self, path: Path) -> tuple[str, str]:
        base = self.root if self.root.is_dir() else self.root.parent
        rel = path.relative_to(base)
        return (str(rel.parent) if str(rel.parent) != "." else "."), rel.name

    def pull(self, cursor: dict | None, view: SourceView) -> Iterator[Batch]:
        batcher = _Batcher(self.batch_size)
        files = self.files()
        seen: dict[str, set[str]] = {}
        located = [(path, *self.scope_of(path)) for path in files]
        # once per scope (not per file), every scope before the first batch
        knowns = _known_maps(view, sorted(set(view.scopes()) | {scope for _p, scope, _l in located}))
        for path, scope, local in located:
            seen.setdefault(scope, set()).add(local)
            known = knowns[scope]
            st = path.stat()
            etag = f"{st.st_mtime_ns}:{st.st_size}"
            if known.get(local) == etag:
                continue
            out = batcher.add(_read_mail(path, Location(scope, local, etag)))
            if out is not None:
                out.total = len(files)
                yield out
        final = batcher.cut()
        for scope, listed in knowns.items():
            present = seen.get(scope, set())
            final.removed.extend(Location(scope, u) for u in listed if u not in present)
        final.total = len(files)
        final.cursor = {"files": len(files)}
        yield final


class MboxConnector(_PathConnector):
    """One mbox file, or a folder of them (each file is a scope).

    Read the way Python's :mod:`mailbox` and mail programs read it, see
    :func:`_mbox_messages`: mboxo/mboxrd (``>From`` unquoted), mboxcl/mboxcl2
    (``Content-Length`` honoured where it holds), as written by Thunderbird,
    Gmail Takeout, mutt, procmail/formail and the ``mailbox`` module.
    """

    type = "mbox"
    what = "mbox file"
    recursive = False

    def pull(self, cursor: dict | None, view: SourceView) -> Iterator[Batch]:
        cursor = dict(cursor or {})
        batcher = _Batcher(self.batch_size)
        new_cursor = {}
        problems = []
        files = self.files()
        knowns = _known_maps(view, [p.name for p in files if _stat_changed(p, cursor.get(p.name))])
        for path in files:
            scope = path.name
            try:
                fh = open_regular(path)
            except OSError as exc:
                log.warning("cannot read %s: %s", path, _why(exc))
                problems.append(f"cannot read {path}: {_why(exc)}")
                if scope in cursor:
                    new_cursor[scope] = cursor[scope]
                continue
            with fh:
                st = os.fstat(fh.fileno())
                prior = cursor.get(scope) or {}
                first = fh.read(4096)
                head = hashlib.sha1(first).hexdigest()[:16]
                state = {"size": st.st_size, "mtime": st.st_mtime_ns, "head": head}
                if prior == state:
                    new_cursor[scope] = state
                    continue
                grown = prior and prior.get("head") == head and st.st_size >= prior.get("size", 0)
                start = prior.get("size", 0) if grown else 0
                known = knowns.pop(scope, None)
                if known is None:  # changed since the listing
                    known = view.known(scope)
                present: set[str] = set()
                # an old Mac export ends its lines with CR alone
                stream = cast(BinaryIO, _CrAsLf(fh)) if b"\r" in first and b"\n" not in first else fh
                for offset, raw, size in _mbox_messages(stream, start):
                    local = f"{offset}:{hashlib.sha1(raw).hexdigest()[:12]}"
                    present.add(local)
                    if local in known:
                        continue
                    loc = Location(scope, local, "")
                    try:
                        item: Record | Failure = parse_message(raw, loc, size=size)
                    except MailParseError as exc:
                        item = Failure(loc, str(exc), _excerpt(raw))
                    except Exception as exc:
                        item = Failure(loc, f"unexpected parse error: {exc.__class__.__name__}: {exc}",
                                       _excerpt(raw))
                    out = batcher.add(item)
                    if out is not None:
                        yield out
            if not grown:
                gone = [Location(scope, u) for u in known if u not in present]
                if gone and not present and len(known) > 1:
                    problems.append(f"{path} holds no messages any more; nothing removed")
                    gone = []
                batcher.batch.removed.extend(gone)
            new_cursor[scope] = state
        final = batcher.cut()
        final.cursor = new_cursor
        final.problems = problems
        yield final


def _stat_changed(path: Path, prior: dict | None) -> bool:
    """Whether an mbox file's size or mtime differ from its cursor entry (it will be read)."""
    try:
        st = path.stat()
    except OSError:
        return False
    prior = prior if isinstance(prior, dict) else {}
    return prior.get("size") != st.st_size or prior.get("mtime") != st.st_mtime_ns


#: a "From " line that needs no blank line before it to start a message:
#: the postmark ``From <sender> <asctime date>`` of mail programs (mutt's
#: is_from, more or less): ``From MAILER-DAEMON Mon Jan  1 00:00:00 2001``
#: (mailbox module, mutt, formail), ``From - Mon Jan 01 00:00:00 2001``
#: (Thunderbird), ``From 1234567890@xxx Mon Jan 01 00:00:00 +0000 2024``
#: (Gmail Takeout)
_POSTMARK = re.compile(
    rb"From \S*[ \t]+(?:[A-Za-z]{3},?[ \t]+)?[A-Za-z]{3}[ \t]+\d{1,2}[ \t]+\d{1,2}:\d\d(?::\d\d)?[ \t]+"
    rb"(?:[A-Za-z]{1,5}[ \t]+|[+-]\d{4}[ \t]+)?\d{4}\b")
_CONTENT_LENGTH = re.compile(rb"content-length:[ \t]*(\d{1,12})[ \t]*\r?\n?$", re.IGNORECASE)
_BLANK = (b"\n", b"\r\n")
#: the longest piece of a line read at once (a line without an end is read in pieces)
_LINE_PIECE = 64 * 1024


class _CrAsLf:
    """A file whose lines end with CR alone (old Mac mail programs) read as if
    they ended with LF: each CR becomes one LF, so every offset stays true."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh

    def read(self, size: int = -1) -> bytes:
        return self.fh.read(size).replace(b"\r", b"\n")

    def readline(self, limit: int = -1) -> bytes:
        start = self.fh.tell()
        data = self.fh.read(limit if limit > 0 else _LINE_PIECE)
        end = data.find(b"\r")
        if end >= 0:
            data = data[:end + 1]
            self.fh.seek(start + end + 1)
        return data.replace(b"\r", b"\n")

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.fh.seek(pos, whence)

    def tell(self) -> int:
        return self.fh.tell()


class _Lines:
    """Lines of a binary file with their offsets, in bounded pieces, one back."""

    def __init__(self, fh: BinaryIO, pos: int):
        fh.seek(pos)
        self.fh = fh
        self.pos = pos  # offset of the next line
        self.bol = True  # the next piece starts a line
        self._back: tuple[bytes, bool] | None = None

    def next(self) -> tuple[bytes, bool]:
        """(piece, starts a line); b"" at the end."""
        if self._back is not None:
            piece, bol = self._back
            self._back = None
        else:
            piece, bol = self.fh.readline(_LINE_PIECE), self.bol
        self.pos += len(piece)
        self.bol = piece.endswith(b"\n")
        return piece, bol

    def back(self, piece: bytes, bol: bool) -> None:
        self._back = (piece, bol)
        self.pos -= len(piece)
        self.bol = bol

    def seek(self, pos: int) -> None:
        self.fh.seek(pos)
        self.pos, self.bol, self._back = pos, True, None


def _mbox_messages(fh: BinaryIO, start: int) -> Iterator[tuple[int, bytes, int]]:
    """(offset, message bytes, full size) of each message of an mbox file from ``start``.

    The file is read as a stream, never whole; of a message larger than
    :data:`MAX_MESSAGE_BYTES` only that much is kept.

    * A line starting with ``From `` after a blank line (or at the start)
      begins a message, as :mod:`mailbox` reads it; without a blank line
      before it only a real postmark line does (:data:`_POSTMARK`), so
      messages written back to back are not merged, and a body line
      "From here on ..." that a sloppy writer did not quote stays text.
    * A message whose header says ``Content-Length: N`` (mboxcl, mboxcl2,
      Solaris mail, mutt) takes the N bytes after its header as its body
      when they end where the file or the next message begins; where they
      do not (a length that is wrong, or one copied from elsewhere), the
      body is read line by line as above.
    * mboxrd quoting is undone: ``>From `` -> ``From ``, ``>>From `` ->
      ``>From `` (not for a body taken by Content-Length: mboxcl2 does
      not quote).
    * The blank line that separates a message from the next is not part
      of it.
    """
    lines = _Lines(fh, start)
    piece, bol = lines.next()
    while piece and bol and piece in _BLANK:  # blank lines before the first message
        piece, bol = lines.next()
    while piece:
        offset = lines.pos - len(piece)
        kept: list[bytes] = []
        kept_bytes = size = 0

        def keep(data: bytes) -> None:
            nonlocal kept_bytes, size
            size += len(data)
            if kept_bytes < MAX_MESSAGE_BYTES:
                kept.append(data)
                kept_bytes += len(data)

        if not (bol and piece.startswith(b"From ")):
            lines.back(piece, bol)  # a file (or a part) that does not start with "From "
        else:
            while not piece.endswith(b"\n") and piece:  # the rest of a long postmark line
                piece, bol = lines.next()
        # the header, up to and including its blank line
        length: int | None = None
        header_done = False
        while True:
            piece, bol = lines.next()
            if not piece:
                break
            if bol and piece.startswith(b"From ") and _POSTMARK.match(piece):
                lines.back(piece, bol)  # a header cut short by the next message
                break
            if bol and piece[:15].lower() == b"content-length:":
                m = _CONTENT_LENGTH.match(piece)
                length = int(m.group(1)) if m else None
            keep(piece)
            if bol and piece in _BLANK:
                header_done = True
                break
        body_at = lines.pos
        if length is not None and header_done and _body_by_length(fh, lines, body_at, length):
            end = body_at + length
            fh.seek(body_at)
            while length > 0 and kept_bytes < MAX_MESSAGE_BYTES:
                chunk = fh.read(min(length, _LINE_PIECE))
                if not chunk:
                    break
                keep(chunk)
                length -= len(chunk)
            size += length  # the rest is counted, not read
            lines.seek(end)
            piece, bol = lines.next()
            while piece and bol and piece in _BLANK:
                piece, bol = lines.next()
        else:
            if length is not None:
                lines.seek(body_at)
            previous_blank = True
            held = b""  # a blank line: the separator, or part of the body if no message follows
            while True:
                piece, bol = lines.next()
                if not piece:
                    break
                if bol and piece.startswith(b"From ") and (previous_blank or _POSTMARK.match(piece)):
                    break
                if held:
                    keep(held)
                    held = b""
                if bol and piece in _BLANK:
                    held = piece
                    previous_blank = True
                    continue
                previous_blank = False
                if bol and piece.startswith(b">") and piece.lstrip(b">").startswith(b"From "):
                    piece = piece[1:]
                keep(piece)
        yield offset, b"".join(kept), size


def _body_by_length(fh: BinaryIO, lines: _Lines, body_at: int, length: int) -> bool:
    """Whether ``length`` bytes from ``body_at`` end where the file or the
    next message begins (blank lines between allowed)."""
    end = body_at + length
    if end > os.fstat(fh.fileno()).st_size:
        return False
    fh.seek(end)
    ok = False
    for _ in range(8):
        line = fh.readline(_LINE_PIECE)
        if not line:
            ok = True
            break
        if line in _BLANK:
            continue
        ok = line.startswith(b"From ")
        break
    lines.seek(body_at)
    return ok


class _WholeFileConnector(_PathConnector):
    """A file (or folder of files) of many items, parsed again when it changes."""

    def parse(self, text: str, loc: Location) -> tuple[list[Record], list[Failure]]:
        raise NotImplementedError

    def item_id(self, record: Record) -> str:
        return getattr(record, "uid", "") or ""

    def pull(self, cursor: dict | None, view: SourceView) -> Iterator[Batch]:
        cursor = dict(cursor or {})
        new_cursor: dict[str, str | None] = {}
        changed_files = []
        for path in self.files():
            scope = str(path)
            st = path.stat()
            etag = f"{st.st_mtime_ns}:{st.st_size}"
            new_cursor[scope] = etag
            if cursor.get(scope) != etag:
                changed_files.append((path, scope, etag))
        knowns = _known_maps(view, [scope for _p, scope, _e in changed_files])
        for path, scope, etag in changed_files:
            batch = Batch()
            try:
                with open_regular(path) as fh:
                    text = fh.read().decode("utf-8-sig", "replace")
            except OSError as exc:
                log.warning("cannot read %s: %s", path, _why(exc))
                batch.problems.append(f"cannot read {path}: {_why(exc)}")
                new_cursor[scope] = cursor.get(scope)
                yield batch
                continue
            records, failures = self.parse(text, Location(scope, path.name, etag))
            known = knowns.pop(scope)
            present = set()
            changed = []
            for rec in records:
                item = self.item_id(rec)
                # an item's etag is a hash of what it says, so an unchanged item of a changed file is not news
                rec.location = Location(scope, item, _content_etag(rec))
                present.add(item)
                if known.get(item) != rec.location.etag:
                    changed.append(rec)
            records = changed
            # each broken item of the file gets a place of its own, stable while the file is unchanged
            failures = [Failure(Location(scope, f"{path.name}#broken-{n}", etag), f.reason, f.excerpt)
                        for n, f in enumerate(failures, 1)]
            present.update(f.location.local_id for f in failures)
            batch.records.extend(records)
            batch.failures.extend(failures)
            gone = [Location(scope, u) for u in known if u not in present]
            if gone and not present and len(known) > 1:
                batch.problems.append(f"{path} holds no items any more; nothing removed")
                gone = []
            batch.removed.extend(gone)
            batch.done = len(records) + len(failures)
            yield batch
        final = Batch(cursor={k: v for k, v in new_cursor.items() if v is not None})
        yield final


def _content_etag(rec: Record) -> str:
    from dataclasses import replace

    return "h:" + hashlib.sha1(repr(replace(rec, location=Location("", ""))).encode()).hexdigest()[:20]


class IcsConnector(_WholeFileConnector):
    type = "ics"
    what = ".ics file"
    suffixes = (".ics",)
    option_keys = _PathConnector.option_keys | {"window_past_days", "window_future_days"}

    def parse(self, text, loc):
        from crm_bridge.connectors.ical import parse_calendar

        past = int(self.options.get("window_past_days", 730))
        future = int(self.options.get("window_future_days", 365))
        now = datetime.now(timezone.utc)
        return parse_calendar(text, loc, (now - timedelta(days=past), now + timedelta(days=future)))


class VcfConnector(_WholeFileConnector):
    type = "vcf"
    what = ".vcf file"
    suffixes = (".vcf",)
    priority = 10

    def parse(self, text, loc):
        from crm_bridge.connectors.vcard import parse_vcards

        return parse_vcards(text, loc)
