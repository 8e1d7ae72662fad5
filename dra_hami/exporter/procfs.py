"""Facts about a node process that its owner cannot forge, read from /proc (the host's, with hostPID).

The node guard must tell which claim a GPU process belongs to without trusting anything the tenant
controls: not its environment, not files in its claim directory. Two facts qualify:

* its mount table (``/proc/<pid>/mountinfo``): the claim directory the runtime bind-mounted into the
  container shows up with the device number of the claim's tmpfs (or, for plain directories, the host
  path inside that filesystem). An unprivileged process cannot add a mount of a filesystem it cannot
  reach, so a claim seen there is a claim the container was given;
* its cgroup (``/proc/<pid>/cgroup``): the kubelet puts each pod's containers under a cgroup named after
  the pod's UID, and a container cannot move itself out of its pod's subtree.

These files are written by the kernel, so they are parsed without further suspicion; a process that ends
while it is read simply yields no facts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# kubepods-burstable-pod<uid with _>.slice (systemd driver) or /kubepods/burstable/pod<uid>/ (cgroupfs)
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    device: str  # "major:minor" of the mounted filesystem
    root: str  # the directory of that filesystem mounted here ("/" for a whole tmpfs)
    mount_point: str


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        entries.append(MountEntry(fields[2], unescape(fields[3]), unescape(fields[4])))
    return entries


def pod_uid_of_cgroup(text: str) -> str | None:
    """The pod UID in a /proc/<pid>/cgroup text, or None (not a pod's process)."""
    for line in text.splitlines():
        parts = line.split(":", 2)  # hierarchy-ID:controllers:path (the path may hold colons)
        if len(parts) == 3 and (match := _POD_UID.search(parts[2])):
            return match.group(1).replace("_", "-")
    return None


def start_time(stat_text: str) -> int:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot): with the PID, one process."""
    return int(stat_text.rpartition(")")[2].split()[19])


def device_id(st_dev: int) -> str:
    return f"{os.major(st_dev)}:{os.minor(st_dev)}"


class ProcFs:
    """Readers over a /proc root (the host's /proc with hostPID; a directory in tests)."""

    def __init__(self, root: Path = Path("/proc")):
        self.root = root

    def _read(self, pid: int, name: str) -> str | None:
        try:
            with open(self.root / str(pid) / name, encoding="utf-8", errors="replace") as f:
                return f.read(1 << 20)  # kernel-made; the bound only guards against a pathological table
        except (FileNotFoundError, ProcessLookupError):
            return None
        except OSError:
            return None

    def mounts(self, pid: int) -> list[MountEntry] | None:
        text = self._read(pid, "mountinfo")
        return parse_mountinfo(text) if text is not None else None

    def pod_uid(self, pid: int) -> str | None:
        text = self._read(pid, "cgroup")
        return pod_uid_of_cgroup(text) if text is not None else None

    def start_time(self, pid: int) -> int | None:
        text = self._read(pid, "stat")
        try:
            return start_time(text) if text is not None else None
        except (IndexError, ValueError):
            return None
