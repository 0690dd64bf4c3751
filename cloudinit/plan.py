"""The pure planner: cloud-config -> ordered actions -> steps against the observed machine.

Two pure functions and no I/O:

* :func:`desired_actions` turns a config (plus the metadata substitution values) into the
  ordered list of things the machine should have, in the original's order: hostname,
  users and their keys, ``core``'s keys, files (write_files, oem-release, update.conf,
  /etc/hosts, flannel options), /etc/environment, units (user units, then the etcd, etcd2,
  fleet and locksmith drop-ins and the update units), one daemon-reload, unit commands.
  The v1 ``coreos.etcd`` section configures kvd through ``etcd_v1``, with a note for each
  etcd 0.4 option it renames; a unit the config names by a CoreOS name (``etcd.service``,
  ``fleet.service``) is answered by the Flotilla unit that carries that alias.
* :func:`reconcile` compares each action with an :class:`Observed` snapshot of the machine
  and says whether it changes anything. That is what makes a second run with the same
  input change nothing, and it is where a command on a unit that does not exist is refused
  before anything is applied.

The shell (``execute``) gathers the snapshot and applies the changing steps.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import etcd_v1, flannel, schema
from .actions import (
    Action,
    AliasUnit,
    DaemonReload,
    EnableUnit,
    EnsureUser,
    EtcHosts,
    InstallKeys,
    MaskUnit,
    MergeEnvFile,
    Note,
    Refuse,
    SetHostname,
    UnitCommand,
    UnmaskUnit,
    WriteFile,
    WriteUnitFile,
)
from .config import CloudConfig, EnvSection, Unit

NETWORK_SUFFIXES = (".network", ".netdev", ".link")
ACTIVE_STATES = ("active", "activating", "reloading")
SSH_KEY_NAME = "coreos-cloudinit"
OLD_KEYS = "old_authorized_keys"
KEYS_HEADER = "# auto-generated from authorized_keys.d by flotilla-cloudinit\n"
# CoreOS unit names and the Flotilla unit whose [Install] Alias= carries each. They exist
# as names only once that unit is enabled, and etcd.service may be Debian's etcd instead.
ALIASES = {"etcd.service": "kvd.service", "etcd2.service": "kvd.service",
           "fleet.service": "fleetd.service"}
ETCD_V1_DROP_IN = "20-cloudinit-etcd.conf"  # sorts before etcd2's 20-cloudinit.conf


class PlanError(ValueError):
    """The config cannot be applied to this machine; nothing was changed."""


# ---------------------------------------------------------------------------- desired


def go_value(value: object) -> str:
    """Format a value as the original's ``%v`` did (bools lower-case, floats shortest)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        import decimal  # only floats need it, and few configs have one

        digits = decimal.Decimal(repr(value)).normalize().as_tuple()
        exp10 = len(digits.digits) + int(digits.exponent) - 1
        if exp10 < -4 or exp10 >= 6:
            mantissa, _, exponent = f"{value:e}".partition("e")
            mantissa = mantissa.rstrip("0").rstrip(".")
            sign = "-" if int(exponent) < 0 else "+"
            return f"{mantissa}e{sign}{abs(int(exponent)):02d}"
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def service_contents(section: EnvSection) -> str:
    """``[Service]`` plus one quoted Environment= line per set field, in schema order."""
    if not section:
        return ""
    lines = ["[Service]"]
    lines += [f'Environment="{f.env}={go_value(v)}"' for f, v in section]
    return "\n".join(lines) + "\n"


def unit_dir(name: str, runtime: bool) -> str:
    kind = "network" if name.endswith(NETWORK_SUFFIXES) else "system"
    return f"/{'run' if runtime else 'etc'}/systemd/{kind}"


def _generated_units(cfg: CloudConfig, etcd: etcd_v1.KvdSettings) -> list[Unit]:
    """The drop-in units for etcd (translated for kvd), etcd2 (also kvd), fleet (also
    fleetd), locksmith and the update units, in the original's order. Sections with no
    fields produce nothing."""
    from .config import DropIn

    out: list[Unit] = []
    if etcd.drop_in():
        out.append(Unit(name="kvd.service", runtime=True,
                        drop_ins=[DropIn(ETCD_V1_DROP_IN, etcd.drop_in())]))
    for names, section in (
        (("etcd2.service", "kvd.service"), cfg.coreos.etcd2),
        (("fleet.service", "fleetd.service"), cfg.coreos.fleet),
        (("locksmithd.service",), cfg.coreos.locksmith),
    ):
        content = service_contents(section)
        if content:
            out += [Unit(name=n, runtime=True, drop_ins=[DropIn("20-cloudinit.conf", content)])
                    for n in names]
    update = cfg.coreos.update
    if update.reboot_strategy == "off":
        # One entry per unit: a separate unmasked entry for the locksmith drop-in would
        # undo this mask, and every run would flip the mask back and forth.
        locksmith = next((u for u in out if u.name == "locksmithd.service"), None)
        if locksmith is None:
            out.append(Unit(name="locksmithd.service", runtime=True, mask=True, command="stop"))
        else:
            locksmith.mask, locksmith.command = True, "stop"
    elif update.reboot_strategy:
        out.append(Unit(name="locksmithd.service", runtime=True, command="restart"))
    if update.group or update.server:
        out.append(Unit(name="update-engine.service", command="restart"))
    return out


def _oem_release(cfg: CloudConfig) -> bytes:
    o = cfg.coreos.oem

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return (f"ID={o.id}\nVERSION_ID={o.version_id}\nNAME={quoted(o.name)}\n"
            f"HOME_URL={quoted(o.home_url)}\nBUG_REPORT_URL={quoted(o.bug_report_url)}\n"
            ).encode()


def desired_actions(cfg: CloudConfig, values: Mapping[str, str],
                    key_name: str = SSH_KEY_NAME) -> list[Action]:
    """The ordered actions a config asks for. ``values`` are the substitution addresses,
    used for /etc/environment."""
    actions: list[Action] = []
    if cfg.hostname:
        actions.append(SetHostname(cfg.hostname))
    for user in cfg.users:
        if not user.name:
            continue
        actions.append(EnsureUser(user, user.homedir or f"/home/{user.name}"))
        if user.coreos_ssh_import_github or user.coreos_ssh_import_github_users \
                or user.coreos_ssh_import_url:
            actions.append(Note(f"users {user.name}: coreos-ssh-import-* keys are not fetched "
                                "(deprecated: a remote fetch at boot fails intermittently); "
                                "list the keys in ssh_authorized_keys"))
        if user.ssh_authorized_keys:
            actions.append(InstallKeys(user.name, key_name, tuple(user.ssh_authorized_keys)))
    if cfg.ssh_authorized_keys:
        actions.append(InstallKeys("core", key_name, tuple(cfg.ssh_authorized_keys)))

    written: set[str] = set()
    for wf in cfg.write_files:
        actions.append(WriteFile(wf.path, wf.content, wf.mode, wf.owner))
        written.add(posixpath.normpath(wf.path))
    if cfg.coreos.oem.id:
        actions.append(WriteFile("/etc/oem-release", _oem_release(cfg)))
    update = cfg.coreos.update
    update_values = tuple((f.env, getattr(update, f.name)) for f in schema.UPDATE
                          if getattr(update, f.name))
    if update_values:
        actions.append(MergeEnvFile("/etc/coreos/update.conf", update_values,
                                    fallback="/usr/share/coreos/update.conf", prefix_match=True))
    if cfg.manage_etc_hosts == "localhost":
        actions.append(EtcHosts())
    options = flannel.translate(cfg.coreos.flannel, go_value)
    actions += [Refuse(text) for text in options.errors]
    if options.content:
        actions.append(WriteFile(flannel.OPTIONS_ENV, options.content))
    if "/etc/environment" not in written:
        env = tuple(sorted((f"COREOS_{k.upper()}", v) for k, v in values.items() if v))
        if env:
            actions.append(MergeEnvFile("/etc/environment", env))

    commands: list[UnitCommand] = []
    etcd = etcd_v1.translate(cfg.coreos.etcd)
    actions += [Note(text) for text in etcd.notes] + [Refuse(text) for text in etcd.errors]
    aliases = _aliases_needed(cfg)
    actions += aliases
    reload_needed = bool(aliases)
    network = False
    for unit in [*cfg.coreos.units, *_generated_units(cfg, etcd)]:
        if not unit.name:
            continue
        directory = unit_dir(unit.name, unit.runtime)
        path = f"{directory}/{unit.name}"
        is_network = unit.name.endswith(NETWORK_SUFFIXES)
        if unit.content:
            actions.append(WriteUnitFile(unit.name, path, unit.content.encode()))
            reload_needed = True
        for drop in unit.drop_ins:
            if drop.name and drop.content:
                actions.append(WriteUnitFile(unit.name, f"{path}.d/{drop.name}",
                                             drop.content.encode()))
                reload_needed = True
        if unit.mask:
            actions.append(MaskUnit(unit.name, path))
            reload_needed = True
        elif unit.runtime:
            actions.append(UnmaskUnit(unit.name, path))
        if unit.enable and not is_network:
            actions.append(EnableUnit(unit.name, unit.runtime))
        if is_network:
            network = True
        elif unit.command:
            commands.append(UnitCommand(unit.name, unit.command))
    if reload_needed:
        actions.append(DaemonReload())
    if network:
        actions.append(UnitCommand("systemd-networkd.service", "restart"))
    actions.extend(commands)
    return actions


def _aliases_needed(cfg: CloudConfig) -> list[Action]:
    """One AliasUnit per Flotilla unit that a CoreOS unit name in coreos.units stands for
    (a name the config does not define or mask itself); reconcile decides if it is needed."""
    out: list[Action] = []
    for unit in cfg.coreos.units:
        target = ALIASES.get(unit.name)
        if target and not unit.content and not unit.mask \
                and not any(isinstance(a, AliasUnit) and a.alias == unit.name for a in out):
            out.append(AliasUnit(target, True, alias=unit.name))
    return out


# ---------------------------------------------------------------------------- observed


@dataclass(frozen=True)
class FileState:
    kind: str  # "file", "dir", "symlink", "chardev", "other", "missing"
    content: bytes = b""
    mode: int = 0
    uid: int = -1
    gid: int = -1
    target: str = ""


MISSING = FileState("missing")


@dataclass(frozen=True)
class UserState:
    name: str
    uid: int
    gid: int
    home: str
    password_hash: str


@dataclass(frozen=True)
class UnitState:
    load_state: str = "not-found"
    active_state: str = "inactive"
    unit_file_state: str = ""


@dataclass
class Observed:
    """What the machine looks like, gathered by the shell before planning."""

    hostname: str = ""
    files: dict[str, FileState] = field(default_factory=dict)
    key_dirs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    users: dict[str, UserState] = field(default_factory=dict)
    owners: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    units: dict[str, UnitState] = field(default_factory=dict)

    def file(self, path: str) -> FileState:
        return self.files.get(path, MISSING)

    def unit(self, name: str) -> UnitState:
        return self.units.get(name, UnitState())


def files_to_observe(actions: list[Action]) -> list[str]:
    """Every path whose current state the reconciler needs."""
    paths: list[str] = []
    for a in actions:
        if isinstance(a, WriteFile | WriteUnitFile | MaskUnit | UnmaskUnit | EtcHosts):
            paths.append(a.path)
        elif isinstance(a, MergeEnvFile):
            paths += [a.path] + ([a.fallback] if a.fallback else [])
    return paths


def units_to_observe(actions: list[Action]) -> list[str]:
    names = {a.unit for a in actions if isinstance(a, UnitCommand | EnableUnit)}
    return sorted(names | {a.alias for a in actions if isinstance(a, AliasUnit)})


def owners_to_observe(actions: list[Action]) -> list[str]:
    return sorted({a.owner for a in actions if isinstance(a, WriteFile) and a.owner})


def users_to_observe(actions: list[Action]) -> list[str]:
    names = {a.user.name for a in actions if isinstance(a, EnsureUser)}
    names |= {a.user for a in actions if isinstance(a, InstallKeys)}
    return sorted(names)


def key_dir(home: str) -> str:
    return posixpath.join(home, ".ssh", "authorized_keys.d")


# ---------------------------------------------------------------------------- reconcile


@dataclass(frozen=True)
class Step:
    """One action with its verdict. ``payload`` is what the executor writes, when the
    action's bytes depend on the machine (merged files, /etc/hosts, authorized_keys)."""

    action: Action
    change: bool
    detail: str = ""
    payload: bytes = b""
    argv: tuple[str, ...] = ()

    def describe(self) -> str:
        mark = "info" if isinstance(self.action, Note) else "change" if self.change else "ok"
        text = f"[{mark}] {self.action.describe()}"
        return f"{text}: {self.detail}" if self.detail else text


def merge_env(existing: str, values: tuple[tuple[str, str], ...], prefix_match: bool) -> str:
    """Replace matching keys in place, keep other lines, append new keys sorted."""
    lines = existing.split("\n") if existing else []
    if lines and lines[-1] == "":
        lines.pop()
    pending = dict(values)
    for i, line in enumerate(lines):
        for key in list(pending):
            if (line.startswith(key) if prefix_match else line.split("=", 1)[0] == key):
                lines[i] = f"{key}={pending.pop(key)}"
                break
    lines += [f"{k}={v}" for k, v in sorted(pending.items())]
    return "\n".join(lines) + "\n"


def _file_matches(state: FileState, content: bytes, mode: int,
                  owner: tuple[int, int] | None) -> bool:
    if state.kind != "file" or state.content != content or state.mode != mode:
        return False
    return owner is None or (state.uid, state.gid) == owner


def reconcile(actions: list[Action], observed: Observed) -> list[Step]:
    """Decide which actions change the machine. Raises PlanError when the config cannot
    work here (a command or enable for a unit that neither exists nor is written)."""
    steps: list[Step] = []
    created_users = {a.user.name for a in actions if isinstance(a, EnsureUser)
                     and a.user.name not in observed.users}
    written_units = {a.unit for a in actions if isinstance(a, WriteUnitFile)
                     and posixpath.basename(a.path) == a.unit}
    written_units |= {a.alias for a in actions if isinstance(a, AliasUnit)
                      and observed.unit(a.unit).load_state != "not-found"}
    problems = [a.text for a in actions if isinstance(a, Refuse)]
    problems += [
        f'unit "{name}" does not exist and the config does not define it'
        for name in units_to_observe(actions)
        if observed.unit(name).load_state == "not-found" and name not in written_units
        and name != "systemd-networkd.service"
    ]
    for a in actions:
        if isinstance(a, InstallKeys) and a.user not in observed.users \
                and a.user not in created_users:
            problems.append(f'user "{a.user}" does not exist, cannot install SSH keys')
    if problems:
        raise PlanError("; ".join(problems))

    hostname = observed.hostname
    changed_any = False
    reload_pending = False
    for a in actions:
        step = _reconcile_one(a, observed, hostname, created_users, changed_any)
        if isinstance(a, SetHostname):
            hostname = a.hostname
        if isinstance(a, WriteUnitFile | MaskUnit | UnmaskUnit | AliasUnit) and step.change:
            reload_pending = True
        if isinstance(a, DaemonReload):
            step = Step(a, reload_pending, "" if reload_pending else "no unit changed")
        steps.append(step)
        changed_any = changed_any or step.change
    return steps


def _reconcile_one(a: Action, observed: Observed, hostname: str, created_users: set[str],
                   changed_any: bool) -> Step:
    if isinstance(a, SetHostname):
        return Step(a, observed.hostname != a.hostname)
    if isinstance(a, EnsureUser):
        existing = observed.users.get(a.user.name)
        if existing is None:
            return Step(a, True, "create: useradd " + shlex.join(_masked(a.useradd_args())),
                        argv=tuple(a.useradd_args()))
        if a.user.passwd and existing.password_hash != a.user.passwd:
            return Step(a, True, "set password")
        return Step(a, False, "exists")
    if isinstance(a, InstallKeys):
        user = observed.users.get(a.user)
        present = dict(observed.key_dirs.get(a.user, {})) if user else {}
        unchanged = present.get(a.key_name) == a.content
        present[a.key_name] = a.content
        current = MISSING
        if user is not None:
            current = observed.file(posixpath.join(user.home, ".ssh", "authorized_keys"))
        if current.kind == "file" and current.content and \
                not current.content.startswith(KEYS_HEADER.encode()) and OLD_KEYS not in present:
            # Keys someone put there by hand are kept, as update-ssh-keys did.
            present[OLD_KEYS] = current.content
            unchanged = False
        merged = KEYS_HEADER.encode() + b"".join(present[k] for k in sorted(present))
        unchanged = unchanged and current.kind == "file" and current.content == merged
        return Step(a, not unchanged, payload=merged)
    if isinstance(a, WriteFile):
        owner = observed.owners.get(a.owner) if a.owner else (0, 0)
        if a.owner and owner is None and not _owner_created(a.owner, created_users):
            raise PlanError(f'write_files {a.path}: owner "{a.owner}" does not exist')
        same = owner is not None and _file_matches(observed.file(a.path), a.content, a.mode,
                                                   owner)
        return Step(a, not same, payload=a.content)
    if isinstance(a, EtcHosts):
        content = f"127.0.0.1 {hostname}\n".encode()
        return Step(a, not _file_matches(observed.file(a.path), content, 0o644, None),
                    payload=content)
    if isinstance(a, MergeEnvFile):
        base = observed.file(a.path)
        if base.kind != "file" and a.fallback:
            base = observed.file(a.fallback)
        existing = base.content.decode(errors="replace") if base.kind == "file" else ""
        merged = merge_env(existing, a.values, a.prefix_match).encode()
        current = observed.file(a.path)
        return Step(a, not _file_matches(current, merged, 0o644, None), payload=merged)
    if isinstance(a, WriteUnitFile):
        return Step(a, not _file_matches(observed.file(a.path), a.content, 0o644, None),
                    payload=a.content)
    if isinstance(a, MaskUnit):
        state = observed.file(a.path)
        return Step(a, not (state.kind == "symlink" and state.target == "/dev/null"))
    if isinstance(a, UnmaskUnit):
        state = observed.file(a.path)
        masked = (state.kind == "symlink" and state.target == "/dev/null") \
            or state.kind == "chardev" or (state.kind == "file" and not state.content)
        return Step(a, masked, "" if masked else "not masked")
    if isinstance(a, AliasUnit):
        if observed.unit(a.alias).load_state != "not-found":
            return Step(a, False, f"{a.alias} exists here; left as it is")
        return Step(a, True, f"{a.alias} is not installed here; {a.unit} answers to it")
    if isinstance(a, Note):
        return Step(a, False)
    if isinstance(a, EnableUnit):
        want = "enabled-runtime" if a.runtime else "enabled"
        return Step(a, observed.unit(a.unit).unit_file_state != want)
    if isinstance(a, UnitCommand):
        active = observed.unit(a.unit).active_state in ACTIVE_STATES
        if a.command == "start":
            return Step(a, not active, "" if not active else "already active")
        if a.command == "stop":
            return Step(a, active, "" if active else "already stopped")
        if not active or changed_any:
            return Step(a, True)
        return Step(a, False, "active and nothing changed")
    return Step(a, True)  # DaemonReload is decided by the caller


def _owner_created(owner: str, created: set[str]) -> bool:
    user = owner.replace(".", ":").split(":", 1)[0]
    return user in created


def _masked(args: list[str]) -> list[str]:
    """useradd arguments with the password hash hidden, for printing."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--password" and out[i + 1] != "*":
            out[i + 1] = "<hash>"
    return out
