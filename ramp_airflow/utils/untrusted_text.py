"""Reading what a participant's training wrote, without trusting it.

Every file that comes back from an instance, and every line of its log, was written by code the
participant controls. So a local read opens only a regular file (a link or a named pipe is
refused, not followed or waited on) and reads a bounded number of bytes; text is decoded leniently
and cleaned of what a terminal, a task log or PostgreSQL would act on (escape sequences, NUL and
other control characters); long text keeps its head and its tail and says what was cut.
"""

from __future__ import annotations

import os
import re
import stat

# CSI sequences (colours, cursor moves) and the two-character escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# C0 controls but tab, newline and carriage return, and DEL: PostgreSQL refuses NUL in text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class UnsafeFile(Exception):
    """A participant's file that is not a regular file, or larger than the reader allows."""


def clean(text: str) -> str:
    """``text`` without ANSI escape sequences and control characters (tabs and line breaks kept)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def capped(text: str, head_chars: int, tail_chars: int) -> str:
    """``text``, or its head and tail with a line saying how much was cut between them."""
    if len(text) <= head_chars + tail_chars:
        return text
    cut = len(text) - head_chars - tail_chars
    return f"{text[:head_chars]}\n[... {cut} characters cut ...]\n{text[len(text) - tail_chars :]}"


def _open_regular(path: str):
    """A binary file object on ``path`` if it is a regular file; None if it does not exist."""
    try:
        # O_NOFOLLOW refuses a link as the last component; O_NONBLOCK keeps a FIFO from blocking the open.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise UnsafeFile(f"{path} cannot be opened as a regular file ({err.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFile(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def read_bounded(path: str, max_bytes: int) -> str | None:
    """The regular file at ``path``, decoded leniently; None if missing; ``UnsafeFile`` if over ``max_bytes``."""
    f = _open_regular(path)
    if f is None:
        return None
    with f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeFile(f"{path} is larger than {max_bytes // (1 << 20)} MiB")
    return data.decode("utf-8", "replace")


def read_head_and_tail(path: str, head_bytes: int, tail_bytes: int) -> str | None:
    """
    The regular file at ``path``, decoded leniently, or only its head and tail with a line saying
    what was cut between them; None if missing. Reads at most ``head_bytes + tail_bytes``.
    """
    f = _open_regular(path)
    if f is None:
        return None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size <= head_bytes + tail_bytes:
            return f.read(head_bytes + tail_bytes).decode("utf-8", "replace")
        head = f.read(head_bytes)
        f.seek(size - tail_bytes)
        tail = f.read(tail_bytes)
    cut = size - head_bytes - tail_bytes
    return f"{head.decode('utf-8', 'replace')}\n[... {cut} bytes cut ...]\n{tail.decode('utf-8', 'replace')}"
