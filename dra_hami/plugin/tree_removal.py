"""Remove a directory tree that a tenant filled, without recursion and without ever leaving it.

A claim directory is writable by the claim's containers, so at unprepare it may hold anything: a
thousands-deep chain of directories (``shutil.rmtree`` recurses and raises RecursionError near 1,000 levels on
Python 3.11/3.12), symlinks to host files, FIFOs, device nodes, directories without any permission bits. The
walk below keeps an explicit stack, opens every directory relative to its parent with ``O_NOFOLLOW`` (a
directory swapped for a symlink mid-walk is refused, never entered), never reads a file, and holds at most
``MAX_OPEN_DIRS`` descriptors however deep the tree is (deeper ones are re-opened component by component).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

MAX_OPEN_DIRS = 32
MAX_REPORTED_ERRORS = 8
_MAX_ROUNDS = 64  # listings of one directory while entries keep appearing in it
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class TreeRemovalError(OSError):
    """Parts of the tree could not be removed; the message names the first few paths and why."""


@dataclass
class _Frame:
    name: str  # relative to the parent frame (the first one: relative to the tree's parent directory)
    fd: int | None = None
    skip: set[str] = field(default_factory=set)  # entries that could not be removed


@dataclass
class _Walk:
    top_fd: int  # the tree's parent directory
    stack: list[_Frame]
    errors: list[str] = field(default_factory=list)
    failed: int = 0

    def path(self, depth: int, name: str = "") -> str:
        parts = [f.name for f in self.stack[: depth + 1]]
        if len(parts) > 6:
            parts = [*parts[:3], f"...({len(parts) - 5} more)...", *parts[-2:]]
        return "/".join([*parts, name] if name else parts)

    def error(self, depth: int, name: str, err: OSError) -> None:
        self.failed += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(f"{self.path(depth, name)}: {err.strerror or err}")

    def fd(self, depth: int) -> int:
        """The open directory of frame ``depth``, re-opened from the deepest open ancestor when closed."""
        if depth < 0:
            return self.top_fd
        start = depth
        while start >= 0 and self.stack[start].fd is None:
            start -= 1
        for i in range(start + 1, depth + 1):
            parent = self.stack[i - 1].fd if i > 0 else self.top_fd
            self.stack[i].fd = _open_dir(parent, self.stack[i].name)  # type: ignore[arg-type]
            self._limit_open(i)
        return self.stack[depth].fd  # type: ignore[return-value]

    def _limit_open(self, keep_from: int) -> None:
        """Close the shallowest open directories above ``keep_from`` beyond MAX_OPEN_DIRS. Open frames
        always form one contiguous run of the stack (deeper ones open, shallower ones closed), so the
        scan starts where the last one stopped."""
        open_count = sum(1 for f in self.stack[max(0, keep_from - MAX_OPEN_DIRS) : keep_from + 1] if f.fd is not None)
        if open_count <= MAX_OPEN_DIRS:
            return
        for frame in self.stack[max(0, keep_from - MAX_OPEN_DIRS - 1) : keep_from - MAX_OPEN_DIRS + 1]:
            if frame.fd is not None:
                os.close(frame.fd)
                frame.fd = None

    def close_all(self) -> None:
        for frame in self.stack:
            if frame.fd is not None:
                os.close(frame.fd)
                frame.fd = None


def remove_tree(path: Path) -> None:
    """Remove ``path`` (a directory, a file or a link) and all below it; a missing path is not an error.

    Raises TreeRemovalError naming what is left when some entries cannot be removed (the rest is removed
    anyway). ``path``'s parent directory is trusted (it is ours); everything below it is not.
    """
    top_fd = os.open(path.parent, _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        try:
            st = os.lstat(path.name, dir_fd=top_fd)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path.name, dir_fd=top_fd)
            return
        walk = _Walk(top_fd, [_Frame(path.name)])
        try:
            _run(walk)
        finally:
            walk.close_all()
    finally:
        os.close(top_fd)
    if walk.failed:
        more = f" (and {walk.failed - len(walk.errors)} more)" if walk.failed > len(walk.errors) else ""
        raise TreeRemovalError(
            errno.ENOTEMPTY, f"cannot remove everything under {path}: {'; '.join(walk.errors)}{more}"
        )


def _run(walk: _Walk) -> None:
    while walk.stack:
        depth = len(walk.stack) - 1
        frame = walk.stack[-1]
        try:
            fd = walk.fd(depth)
        except OSError as err:
            walk.stack.pop()
            if err.errno in (errno.ENOTDIR, errno.ELOOP):  # swapped for a file or a link since it was seen
                _unlink(walk, depth - 1, frame.name)
            elif err.errno != errno.ENOENT:
                walk.error(depth - 1, frame.name, err)
                if walk.stack:
                    walk.stack[-1].skip.add(frame.name)
            continue
        child = _clear_files(walk, depth, fd, frame)
        if child is not None:
            walk.stack.append(_Frame(child))
            continue
        os.close(fd)
        frame.fd = None
        walk.stack.pop()
        try:
            os.rmdir(frame.name, dir_fd=walk.fd(depth - 1))
        except FileNotFoundError:
            pass
        except OSError as err:
            if not frame.skip:  # not emptied by us: something appeared meanwhile, or rmdir is refused
                walk.error(depth - 1, frame.name, err)
            if walk.stack:
                walk.stack[-1].skip.add(frame.name)


def _clear_files(walk: _Walk, depth: int, fd: int, frame: _Frame) -> str | None:
    """Unlink every non-directory in the directory; return one subdirectory to descend into, or None."""
    for _ in range(_MAX_ROUNDS):
        removed = False
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.name in frame.skip:
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir:
                    _make_enterable(fd, entry.name)
                    return entry.name
                if _unlink(walk, depth, entry.name):
                    removed = True
                elif entry.name not in frame.skip:
                    _make_enterable(fd, entry.name)
                    return entry.name  # became a directory after it was listed
        if not removed:
            return None  # a listing that changed while files were removed is read again
    return None  # still filling up after many rounds (a live writer): the rmdir below reports it


def _unlink(walk: _Walk, depth: int, name: str) -> bool:
    """Unlink one entry; False when it turned out to be a directory (the caller descends instead)."""
    try:
        os.unlink(name, dir_fd=walk.fd(depth))
    except FileNotFoundError:
        return True
    except IsADirectoryError:
        return False
    except OSError as err:
        if err.errno == errno.EISDIR or (err.errno == errno.EPERM and _is_dir(walk.fd(depth), name)):
            return False
        walk.error(depth, name, err)
        walk.stack[depth].skip.add(name)
    return True


def _is_dir(fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode)
    except OSError:
        return False


def _make_enterable(parent_fd: int, name: str) -> None:
    """Give a directory its owner's rwx bits when it lacks them, so it can be listed and emptied.

    Root needs none of this (it bypasses permission bits); a plugin run as its file owner (tests) does.
    Done through an O_PATH descriptor (opened with O_NOFOLLOW), so a symlink is never followed.
    """
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o700 == 0o700 or st.st_uid != os.geteuid():
        return
    try:
        pfd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except OSError:
        return
    try:
        os.chmod(f"/proc/self/fd/{pfd}", 0o700)
    except OSError:
        pass  # the open below reports the real problem
    finally:
        os.close(pfd)


def _open_dir(parent_fd: int, name: str) -> int:
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
