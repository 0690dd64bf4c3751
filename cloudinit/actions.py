"""The planner's vocabulary: one frozen dataclass per thing a cloud-config can ask of a
machine, each able to describe itself in one line (the ``--dry-run`` text).

They carry no behaviour beyond that: ``plan`` decides which are wanted and whether each
changes anything, ``execute`` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import User


@dataclass(frozen=True)
class SetHostname:
    hostname: str

    def describe(self) -> str:
        return f"set hostname {self.hostname}"


@dataclass(frozen=True)
class EnsureUser:
    user: User
    home: str

    def describe(self) -> str:
        return f"user {self.user.name}"

    def useradd_args(self) -> list[str]:
        """The useradd arguments, in the original's order, ending with the name."""
        u = self.user
        args = ["--password", u.passwd or "*"]
        if u.gecos:
            args += ["--comment", u.gecos]
        if u.homedir:
            args += ["--home-dir", u.homedir]
        args.append("--no-create-home" if u.no_create_home else "--create-home")
        if u.primary_group:
            args += ["--gid", u.primary_group]
        if u.groups:
            args += ["--groups", ",".join(u.groups)]
        if u.no_user_group:
            args.append("--no-user-group")
        if u.system:
            args.append("--system")
        if u.no_log_init:
            args.append("--no-log-init")
        if u.shell:
            args += ["--shell", u.shell]
        return [*args, u.name]


@dataclass(frozen=True)
class InstallKeys:
    """Keys into ``~/.ssh/authorized_keys.d/<key_name>``, then the merged file rebuilt."""

    user: str
    key_name: str
    keys: tuple[str, ...]

    @property
    def content(self) -> bytes:
        return ("\n".join(k.strip() for k in self.keys) + "\n").encode()

    def describe(self) -> str:
        return f"ssh keys for {self.user} as {self.key_name} ({len(self.keys)} keys)"


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: bytes
    mode: int = 0o644
    owner: str = ""

    def describe(self) -> str:
        owner = f" owner {self.owner}" if self.owner else ""
        return f"write {self.path} mode {self.mode:04o}{owner} ({len(self.content)} bytes)"


@dataclass(frozen=True)
class EtcHosts:
    """/etc/hosts = ``127.0.0.1 <hostname>``; the hostname is known only at reconcile."""

    path: str = "/etc/hosts"

    def describe(self) -> str:
        return f"write {self.path} for localhost"


@dataclass(frozen=True)
class MergeEnvFile:
    """KEY=value lines merged into an existing file (lines kept, keys replaced in place,
    new keys appended sorted). ``fallback`` is read when ``path`` is missing."""

    path: str
    values: tuple[tuple[str, str], ...]
    fallback: str = ""
    prefix_match: bool = False

    def describe(self) -> str:
        keys = ",".join(k for k, _ in self.values)
        return f"merge {keys} into {self.path}"


@dataclass(frozen=True)
class WriteUnitFile:
    unit: str
    path: str
    content: bytes

    def describe(self) -> str:
        return f"write unit {self.path} ({len(self.content)} bytes)"


@dataclass(frozen=True)
class MaskUnit:
    unit: str
    path: str

    def describe(self) -> str:
        return f"mask {self.unit} ({self.path} -> /dev/null)"


@dataclass(frozen=True)
class UnmaskUnit:
    unit: str
    path: str

    def describe(self) -> str:
        return f"unmask {self.unit} ({self.path})"


@dataclass(frozen=True)
class EnableUnit:
    unit: str
    runtime: bool

    def describe(self) -> str:
        return f"enable {self.unit}" + (" (runtime)" if self.runtime else "")


@dataclass(frozen=True)
class AliasUnit(EnableUnit):
    """Enable ``unit`` for this boot (runtime) so that systemd links ``alias`` to it, but
    only where no unit called ``alias`` exists: Debian's etcd.service is left alone.
    An EnableUnit, so the executor enables it like any other."""

    alias: str = ""

    def describe(self) -> str:
        return f"enable {self.unit} (runtime) so {self.alias} starts it"


@dataclass(frozen=True)
class Note:
    """A line for the user and nothing to do: how a CoreOS setting was carried over."""

    text: str

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class Refuse:
    """A setting the planner cannot carry over; reconcile refuses the whole config."""

    text: str

    def describe(self) -> str:
        return f"refuse: {self.text}"


@dataclass(frozen=True)
class DaemonReload:
    def describe(self) -> str:
        return "daemon-reload"


@dataclass(frozen=True)
class UnitCommand:
    unit: str
    command: str

    def describe(self) -> str:
        return f"{self.command} {self.unit}"


Action = (SetHostname | EnsureUser | InstallKeys | WriteFile | EtcHosts | MergeEnvFile
          | WriteUnitFile | MaskUnit | UnmaskUnit | EnableUnit | DaemonReload | UnitCommand
          | Note | Refuse)
