"""Who may read what: the files and hosts a connector may read, set by the environment.

Threat model. Whoever can add or edit a connector chooses what the worker reads, with
the worker's rights: every file its user can open, every host its network position
reaches, and the cloud metadata service that hands out the machine's credentials. On a
single-user machine that is one person, and the defaults below stay out of the way
(every example in the README works). Where several people or tenants add connectors
to one worker, the operator narrows what they may read:

- ``CONNECTOR_SYNC_FILE_ROOTS``: directories separated by ``os.pathsep`` (``:``). A
  file path must resolve (``~`` expanded, ``..`` collapsed, symlinks followed) under
  one of them. Unset or empty: any path.
- ``CONNECTOR_SYNC_ALLOWED_HOSTS``: host names, ``*.example.com`` wildcards, IP
  addresses and CIDR networks, separated by commas. An http(s) URL's host must be a
  listed name, or every address it resolves to must lie in a listed network. Unset or
  empty: any host.

Always refused, whatever is set: paths under ``/proc``, ``/sys`` and ``/dev``, and
anything that is not a regular file (a FIFO, a socket, a device); link-local addresses
(169.254.0.0/16, fe80::/10) and cloud metadata endpoints (169.254.169.254,
fd00:ec2::254, 100.100.100.200, metadata.google.internal) unless
``CONNECTOR_SYNC_ALLOWED_HOSTS`` lists the name or the address.

The policy is read from the environment each time it is applied: when a plugin
validates a config (`add`, `edit`, and again when a sync or `test` builds the plugin),
when a file is opened, and when a connection is made. A config stored before a policy
was set is therefore checked when it runs. Host names are resolved at connect time and
the connection goes to the very address that was checked, so a name that points at a
metadata address is refused too. Through an HTTP proxy the proxy resolves names, so
there only the rules on names and literal addresses apply.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from connector_sync.exceptions import ConfigError

FILE_ROOTS_VARIABLE = "CONNECTOR_SYNC_FILE_ROOTS"
ALLOWED_HOSTS_VARIABLE = "CONNECTOR_SYNC_ALLOWED_HOSTS"
#: Kernel and device file systems: reading them yields the worker's environment,
#: memory maps or an endless device, never a data file.
REFUSED_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog"})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Link-local networks (169.254.169.254 and 169.254.170.2 are AWS, GCP, Azure and ECS
# metadata), AWS's IPv6 metadata address and Alibaba Cloud's.
_REFUSED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")
)


@dataclass(frozen=True)
class Policy:
    """The file roots and hosts connectors may read (None or empty: no restriction)."""

    file_roots: tuple[Path, ...] | None = None
    host_names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Policy:
        """The policy the environment sets.

        Raises:
            ConfigError: an entry of CONNECTOR_SYNC_ALLOWED_HOSTS is not a host name, an
                IP address or a network.
        """
        env = os.environ if environ is None else environ
        roots = tuple(
            Path(os.path.realpath(Path(root).expanduser()))
            for root in env.get(FILE_ROOTS_VARIABLE, "").split(os.pathsep)
            if root.strip()
        )
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in env.get(ALLOWED_HOSTS_VARIABLE, "").split(","):
            entry = _normal_host(entry)
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            label = entry.removeprefix("*.")
            if not label or not all(c.isalnum() or c in "-._" for c in label):
                raise ConfigError(
                    f"{ALLOWED_HOSTS_VARIABLE}: {entry!r} is not a host name, *.domain, IP "
                    "address or CIDR network; separate entries with commas"
                )
            names.add(entry)
        return cls(roots or None, frozenset(names), tuple(networks))

    @property
    def hosts_restricted(self) -> bool:
        return bool(self.host_names or self.networks)

    # -- files ---------------------------------------------------------------------

    def check_path(self, path: str | Path, where: str) -> Path:
        """The path resolved, if connectors may read it; it need not exist yet.

        Raises:
            ConfigError: under /proc, /sys or /dev, outside the file roots, or an existing
                file that is not a regular file or a directory (a FIFO, socket, device).
        """
        given = Path(path).expanduser()
        resolved = Path(os.path.realpath(given))
        shown = str(path) if str(resolved) == str(path) else f"{path} ({resolved})"
        self._check_location((Path(os.path.abspath(given)), resolved), where, shown)
        try:
            mode = os.stat(resolved).st_mode
        except OSError:  # missing or unreadable: opening it says which
            return resolved
        _check_kind(mode, where, shown)
        return resolved

    def _check_location(self, paths: tuple[Path, ...], where: str, shown: str) -> None:
        """Raises ConfigError unless connectors may read at these spellings of a path
        (the last one resolved)."""
        for candidate in paths:
            for root in REFUSED_ROOTS:
                if _is_under(candidate, root):
                    raise ConfigError(
                        f"{where}: {shown} is under {root}, which connectors may never read"
                    )
        if self.file_roots is not None and not any(
            _is_under(paths[-1], root) for root in self.file_roots
        ):
            roots = os.pathsep.join(map(str, self.file_roots))
            raise ConfigError(
                f"{where}: {shown} is outside {FILE_ROOTS_VARIABLE} ({roots}); move the file "
                f"under one of them, or have the operator add its directory there"
            )

    def open_text(self, path: str | Path, where: str, encoding: str) -> IO[str]:
        """The file opened for reading as text (newlines as they are), if connectors may.

        Opens without blocking, so a FIFO swapped in after the check is refused, not
        waited on; then checks what was opened, where it really is too (on Linux), so a
        directory swapped for a symlink after the check does not lead out of the roots.

        Raises:
            ConfigError: as `check_path`, or the opened file is not a regular file.
            IsADirectoryError, FileNotFoundError, OSError: as `open` does.
            LookupError: an unknown encoding.
        """
        resolved = self.check_path(path, where)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(resolved, flags)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
            _check_kind(mode, where, str(path))
            opened = Path(f"/proc/self/fd/{fd}")
            if opened.is_symlink():  # where the descriptor really points
                really = Path(os.readlink(opened))
                if really != resolved:
                    self._check_location((really,), where, f"{path} ({really})")
            return open(fd, encoding=encoding, newline="", closefd=True)
        except BaseException:
            os.close(fd)
            raise

    # -- hosts ---------------------------------------------------------------------

    def check_host(self, host: str, where: str) -> None:
        """Refuses a host by its name or literal address, before any lookup.

        A name that is not listed while networks are may still pass once resolved
        (`check_addresses`).

        Raises:
            ConfigError: a metadata name or a link-local/metadata address not listed, or
                a host the allowed hosts cannot cover.
        """
        name = _normal_host(host)
        if self._lists_name(name):
            return
        address = _ip(name)
        if address is not None and self._lists_address(address):
            return
        if name in METADATA_NAMES or (address is not None and _is_refused(address)):
            raise _refused_metadata(where, host)
        if self.hosts_restricted and (address is not None or not self.networks):
            raise self._not_allowed(where, host)

    def check_addresses(self, host: str, addresses: Iterable[str], where: str) -> None:
        """Refuses a connection to `host` at any of the addresses it resolved to, unless
        the name is listed.

        Raises:
            ConfigError: an address is link-local or a metadata endpoint, or (with allowed
                hosts set) lies outside every listed network; the message names it.
        """
        name = _normal_host(host)
        if self._lists_name(name):
            return
        self.check_host(host, where)
        for text in addresses:
            address = _ip(text)
            if address is None or self._lists_address(address):
                continue
            if _is_refused(address):
                raise _refused_metadata(where, f"{host} ({address})")
            if self.hosts_restricted:
                raise self._not_allowed(where, f"{host} ({address})")

    def _lists_name(self, name: str) -> bool:
        return name in self.host_names or any(
            name.endswith(pattern[1:]) for pattern in self.host_names if pattern.startswith("*.")
        )

    def _lists_address(self, address: IPAddress) -> bool:
        return any(_in(address, network) for network in self.networks)

    def _not_allowed(self, where: str, host: str) -> ConfigError:
        listed = ", ".join(sorted(self.host_names) + [str(n) for n in self.networks])
        return ConfigError(
            f"{where}: host {host} is not in {ALLOWED_HOSTS_VARIABLE} ({listed}); "
            "have the operator list it there"
        )


def current() -> Policy:
    """The policy the environment sets now."""
    return Policy.from_environment()


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_kind(mode: int, where: str, shown: str) -> None:
    kinds = {
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    for test, kind in kinds.items():
        if test(mode):
            raise ConfigError(f"{where}: {shown} is {kind}, not a regular file; refused")


def _normal_host(host: str) -> str:
    """A host as compared: lower case, without brackets or a trailing dot."""
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def _ip(text: str) -> IPAddress | None:
    """The IP address `text` spells (without an IPv6 zone), else None."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _in(address: IPAddress, network: IPNetwork) -> bool:
    """Whether `address` is in `network`, an IPv4-mapped IPv6 address as its IPv4 too."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address in network or (mapped is not None and mapped in network)


def _is_refused(address: IPAddress) -> bool:
    return any(_in(address, network) for network in _REFUSED_NETWORKS)


def _refused_metadata(where: str, host: str) -> ConfigError:
    return ConfigError(
        f"{where}: host {host} is a link-local or cloud metadata address, which connectors "
        f"may not reach unless {ALLOWED_HOSTS_VARIABLE} lists it"
    )
