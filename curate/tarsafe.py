"""Reading webdataset tars that may be hostile, and writing tars whose bytes depend only on their content.

Shards come from the web and from other people's tools, so a member is never trusted: names with `..`
or an absolute path, links, devices, fifos and sparse members are skipped and counted with a reason,
never extracted (nothing here writes a member's name to disk). Memory stays bounded whatever the tar
holds: headers are parsed by hand (tarfile would read a pax or GNU long-name header of any size into
memory), member data is never read except through `read` (with a size limit) or `copy` (streamed by
the kernel with copy_file_range, or in 1 MiB chunks), and a sample keeps at most MAX_SAMPLE_MEMBERS
members. Samples are grouped as webdataset groups them: consecutive members sharing the key of
`base_plus_ext` (the name up to the first dot of its last component).

The writer makes plain ustar members with mode 0644, owner 0 and mtime 0, so the same samples in the
same order give byte-identical tars, whatever machine or time wrote them.
"""

from __future__ import annotations

import errno
import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

BLOCK = 512
RECORD = 20 * BLOCK  # tarfile pads archives to this, so do we
ZERO_BLOCK = bytes(BLOCK)
MAX_SAMPLE_MEMBERS = 64  # members per sample; more are skipped (a hostile tar could list millions)
MAX_EXT_HEADER = 1 << 20  # bytes of one pax / GNU long-name header; larger ones end the read
COPY_CHUNK = 1 << 20

_KEY_EXT = re.compile(r"^((?:.*/|)[^./][^.]*)\.([^/]*)$")  # webdataset's base_plus_ext, no dot keys
_SAFE_EXT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
_WDS_META = re.compile(r"(^|/)__[^/]*__($|/)")  # webdataset skips these (__key__, __url__, ...)
_REGULAR = {b"0", b"\0", b"7"}  # regular file, old-style regular file, contiguous file
_KINDS = {
    b"1": "hard link",
    b"2": "symlink",
    b"3": "device file",
    b"4": "device file",
    b"5": "directory entry",
    b"6": "fifo",
    b"S": "sparse member",
}


class Member(NamedTuple):
    """A regular-file member that passed every check: where its data lies in the tar (a NamedTuple:
    one is made per member of every tar read, so it must be cheap)."""

    name: str
    key: str
    ext: str
    offset: int
    size: int


@dataclass(slots=True)
class Sample:
    """Consecutive members sharing one key, in tar order."""

    key: str
    members: list[Member] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (member name, reason)

    def member(self, ext: str) -> Member | None:
        return next((m for m in self.members if m.ext == ext), None)


class MemberTooLarge(Exception):
    """`read` refused a member above its limit (the caller counts the sample as skipped)."""


def _number(field_: bytes) -> int:
    """A tar numeric field: octal text, or base-256 when the high bit of the first byte is set."""
    if field_[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field_[1:], "big")
        return value - (1 << (8 * (len(field_) - 1))) if field_[0] == 0xFF else value
    text = field_.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _text(field_: bytes) -> str:
    return field_.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(buf: bytes) -> bool:
    try:
        stored = _number(buf[148:156])
    except ValueError:
        return False
    unsigned = sum(buf) - sum(buf[148:156]) + 256  # the checksum field counts as 8 spaces
    if stored == unsigned:
        return True
    high = sum(1 for b in buf[:148] + buf[156:] if b > 127)  # some old tars summed signed chars
    return stored == unsigned - 256 * high


def _pax_records(data: bytes) -> dict[str, str]:
    """'<len> key=value\\n' records of a pax header (malformed records end the parse)."""
    out, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0 or pos + length > len(data):
            break
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def unsafe_name(name: str) -> str | None:
    """Why a member name must not be used, or None: absolute paths and '..' components."""
    if ".." not in name and name[:1] != "/" and name[1:2] != ":" and "\0" not in name:
        return None  # the common case, cheaply
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute member name"
    if ".." in name.replace("\\", "/").split("/"):
        return "member name with '..'"
    if "\0" in name:
        return "member name with a NUL byte"
    return None


class TarReader:
    """One tar file opened for safe reading; `skipped` counts what was left out, by reason. A URL
    (s3://...) is read through fsspec: headers and members in tar order, so its read-ahead serves it."""

    def __init__(self, path: str | Path) -> None:
        from curate.config import is_url

        self.path = path
        self.fd = -1
        self.remote: IO[bytes] | None = None
        if isinstance(path, str) and is_url(path):
            from curate.storage import open_input

            self.remote = open_input(path)
            self.size = self.remote.seek(0, os.SEEK_END)
        else:
            self.fd = os.open(path, os.O_RDONLY)
            self.size = os.fstat(self.fd).st_size
        self.skipped: Counter[str] = Counter()  # members left out, by reason
        self.stopped: str | None = None  # why reading ended before the end-of-archive marker

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.remote is not None:
            self.remote.close()
            self.remote = None

    def _pread(self, size: int, offset: int) -> bytes:
        if self.remote is None:
            return os.pread(self.fd, size, offset)
        self.remote.seek(offset)
        return self.remote.read(size)

    def __enter__(self) -> TarReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _block(self, offset: int) -> bytes:
        return self._pread(BLOCK, offset)

    def _stop(self, reason: str) -> None:
        self.skipped[reason] += 1
        self.stopped = reason

    def _entries(self) -> Iterator[tuple[str, Member | None, str | None]]:
        """(name, member, None) for usable members, (name, None, reason) for skipped ones, in tar order;
        a damaged tar ends the iteration with its reason in `stopped`."""
        offset = 0
        long_name: str | None = None
        pax: dict[str, str] = {}
        while True:
            buf = self._block(offset)
            if len(buf) < BLOCK:
                if buf or offset == 0:
                    self._stop("truncated tar (header past the end of the file)" if offset else "empty file")
                return
            if buf == ZERO_BLOCK:
                return  # end-of-archive marker
            if not _checksum_ok(buf):
                self._stop("not a tar file" if offset == 0 else "invalid tar header; rest of the tar ignored")
                return
            kind = buf[156:157]
            try:
                size = _number(buf[124:136])
            except ValueError:
                size = -1
            if size < 0:
                self._stop("invalid tar header; rest of the tar ignored")
                return
            data_at = offset + BLOCK
            if kind in (b"x", b"g", b"L", b"K"):  # extended headers describe the next member
                if size > MAX_EXT_HEADER:
                    self._stop("oversized pax or GNU long-name header; rest of the tar ignored")
                    return
                data = self._pread(size, data_at)
                if len(data) < size:
                    self._stop("truncated tar (member data past the end of the file)")
                    return
                if kind == b"x":
                    pax = _pax_records(data)
                elif kind == b"L":
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                offset = data_at + _padded(size)
                continue
            name = _text(buf[0:100])
            if buf[345] and buf[257:263] == b"ustar\0":  # POSIX ustar: the name may be split in two
                prefix = _text(buf[345:500])
                name = f"{prefix}/{name}" if prefix else name
            name = pax.get("path", long_name or name)
            if "size" in pax:
                size = int(pax["size"]) if pax["size"].isdigit() else -1
                if size < 0:
                    self._stop("invalid tar header; rest of the tar ignored")
                    return
            sparse = kind == b"S" or (bool(pax) and any(k.startswith("GNU.sparse.") for k in pax))
            long_name, pax = None, {}
            has_data = kind in _REGULAR or kind not in _KINDS or kind == b"S"  # as tarfile skips data
            if has_data and data_at + size > self.size:
                self._stop("truncated tar (member data past the end of the file)")
                return
            offset = data_at + (_padded(size) if has_data else 0)
            if sparse:
                reason: str | None = "sparse member"
            elif kind not in _REGULAR:
                reason = _KINDS.get(kind, f"unsupported member type {kind.decode('latin-1')!r}")
            else:
                reason = unsafe_name(name)
            if reason is None and "__" in name and _WDS_META.search(name):
                reason = "webdataset meta member (__name__)"
            match = _KEY_EXT.match(name) if reason is None else None
            if reason is None and match is None:
                reason = "member name without a key.extension form"
            elif reason is None and (not _SAFE_EXT.match(match[2]) or ".." in match[2]):
                reason = "unusual member extension"
            if reason is not None:
                self.skipped[reason] += 1
                yield name, None, reason
            else:
                yield name, Member(name, match[1], match[2], data_at, size), None

    def members(self) -> Iterator[Member]:
        """Usable regular-file members, in tar order."""
        for _, member, _ in self._entries():
            if member is not None:
                yield member

    def samples(self) -> Iterator[Sample]:
        """Members grouped into samples like webdataset does (consecutive members with one key).
        A skipped member is listed in its sample's `skipped` (so a caller can say why a sample lacks
        its image); a sample may end up with no usable member at all."""
        current: Sample | None = None
        for name, member, reason in self._entries():
            if member is not None:
                key = member.key
            else:
                match = _KEY_EXT.match(name)
                if match is None or unsafe_name(name):
                    continue  # no key to group by: counted in `skipped` only
                key = match[1]
            if current is None or key != current.key:
                if current is not None:
                    yield current
                current = Sample(key)
            why = reason
            if member is not None and any(m.ext == member.ext for m in current.members):
                why = "duplicate member name in a sample"
            elif member is not None and len(current.members) >= MAX_SAMPLE_MEMBERS:
                why = f"more than {MAX_SAMPLE_MEMBERS} members in a sample"
            elif member is not None:
                current.members.append(member)
                continue
            if member is not None:
                self.skipped[why or ""] += 1
            if len(current.skipped) < MAX_SAMPLE_MEMBERS:  # the list stays bounded; `skipped` counts all
                current.skipped.append((name, why or ""))
        if current is not None:
            yield current

    def read(self, member: Member, limit: int) -> bytes:
        """A member's bytes, refusing (MemberTooLarge) those above `limit` so memory stays bounded."""
        if member.size > limit:
            raise MemberTooLarge(f"{member.name}: {member.size} bytes (limit {limit})")
        return self._pread(member.size, member.offset)

    def copy(self, member: Member, out_fd: int) -> None:
        """Append a member's data to `out_fd` without holding it in memory."""
        if self.remote is None:
            copy_range(self.fd, member.offset, member.size, out_fd)
            return
        done = 0
        while done < member.size:
            chunk = self._pread(min(COPY_CHUNK, member.size - done), member.offset + done)
            if not chunk:
                raise OSError(f"unexpected end of {self.path} copying {member.name}")
            _write_all(out_fd, chunk)
            done += len(chunk)


def copy_range(src_fd: int, offset: int, size: int, out_fd: int) -> None:
    """Copy `size` bytes at `offset` of src to the current position of out: in the kernel when it can
    (copy_file_range), else through a 1 MiB buffer."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src_fd, out_fd, size - done, offset + done)
            if n == 0:
                break  # end of file: the plain loop below says so
            done += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
            raise
    while done < size:  # no copy_file_range here (other filesystems, old kernels): a plain copy
        chunk = os.pread(src_fd, min(COPY_CHUNK, size - done), offset + done)
        if not chunk:
            raise OSError(f"unexpected end of file copying {size} bytes at offset {offset}")
        _write_all(out_fd, chunk)
        done += len(chunk)


def _write_all(out_fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(out_fd, view) :]


# ---------------------------------------------------------------- writing

_HEADER_TAIL = b"ustar\x0000" + bytes(64 + 16 + 155 + 12)  # magic, version, uname, gname, dev, prefix


def ustar_header(name: str, size: int) -> bytes:
    """The header tarfile writes for a regular file with mode 0644, owner 0:0, mtime 0 (USTAR format);
    built directly because tarfile's is ~20x slower. Long names or sizes of 8 GiB and more get a pax
    header through tarfile."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > 100 or size >= 8**11 or not raw.isascii():
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.uname, info.gname = size, 0o644, 0, "", ""
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    head = (
        raw.ljust(100, b"\0")
        + b"0000644\0"
        + b"0000000\0"
        + b"0000000\0"
        + b"%011o\0" % size
        + b"00000000000\0"
        + b"        "
        + b"0"
        + bytes(100)
    )
    block = head + _HEADER_TAIL
    checksum = b"%06o\0 " % sum(block)
    return block[:148] + checksum + block[156:]


class TarWriter:
    """Appends members to an open file descriptor; `close` writes the end-of-archive blocks."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = bytearray()  # headers and padding, flushed before each kernel copy
        self.bytes = 0

    def _flush(self) -> None:
        done, total = 0, len(self.pending)
        with memoryview(self.pending) as view:
            while done < total:
                done += os.write(self.fd, view[done:])
        self.pending.clear()

    def add_from(self, name: str, reader: TarReader, member: Member) -> None:
        """A member named `name` holding `member`'s data, copied without passing through Python."""
        header = ustar_header(name, member.size)
        self.pending += header
        self._flush()
        reader.copy(member, self.fd)
        self.pending += bytes(-member.size % BLOCK)
        self.bytes += len(header) + member.size + (-member.size % BLOCK)
        if len(self.pending) > 1 << 16:
            self._flush()

    def add_bytes(self, name: str, data: bytes) -> None:
        header = ustar_header(name, len(data))
        self.pending += header + data + bytes(-len(data) % BLOCK)
        self.bytes += len(header) + len(data) + (-len(data) % BLOCK)
        if len(self.pending) > 1 << 20:
            self._flush()

    def close(self) -> None:
        self.pending += ZERO_BLOCK * 2
        self.bytes += 2 * BLOCK
        self.pending += bytes(-self.bytes % RECORD)
        self.bytes += -self.bytes % RECORD
        self._flush()
