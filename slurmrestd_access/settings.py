"""Per-host settings of the deploy: inventory host data over the seed's defaults.

Every path, user, mode and unit name is host data; the defaults are the values of the
Slurm-web documentation page this project automates. Pure: no pyinfra import.
"""

from __future__ import annotations

import difflib
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from watchdog_daemon.watch.config import MAX_RESTART_SPACING

ROLES = ("slurmctld", "slurmdbd", "slurmrestd", "compute")

_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9@._:-]+\.service$")
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")


# Host data under the deploy's own names: a key starting so that is not a setting is a typo
# (which would otherwise be ignored silently, the default used instead).
OWN_PREFIXES = ("jwt_", "agent_", "slurmrestd_", "slurmctld_", "slurmdbd_", "key_source_",
                "tool_", "watch_", "check_", "restart_")
# pyinfra's own host data (connector settings, global arguments such as `_sudo`): never ours.
PYINFRA_PREFIXES = ("_", "ssh_", "winrm_", "docker_", "dockerssh_", "podman_", "local_",
                    "chroot_", "fake_", "terraform_", "vagrant_")


class SettingsError(ValueError):
    """A host data value is missing or malformed; the message names the host and the fix."""


@dataclass(frozen=True)
class Settings:
    cluster: str
    # Slurm's signing key (created on the slurmctld host, copied to the slurmdbd host)
    jwt_key_path: str = "/var/spool/slurm/jwt_hs256.key"
    jwt_key_owner: str = "slurm"
    jwt_key_group: str = "slurm"
    jwt_key_mode: int = 0o600
    # Where the key comes from: None = generated on the slurmctld host; else a file on the
    # workstation, or a command run on the workstation that prints the key (secrets manager).
    key_source_file: str | None = None
    key_source_command: str | None = None
    key_source_encoding: str = "raw"  # raw | base64 (what the file/command gives)
    slurm_conf: str = "/etc/slurm/slurm.conf"
    slurmdbd_conf: str = "/etc/slurm/slurmdbd.conf"
    slurmdbd_port: int = 6819  # DbdPort: a restarted slurmdbd is up once it listens there
    slurmctld_unit: str = "slurmctld.service"
    slurmdbd_unit: str = "slurmdbd.service"
    slurmrestd_unit: str = "slurmrestd.service"
    slurmrestd_dropin: str = "/etc/systemd/system/slurmrestd.service.d/slurm-web.conf"
    slurmrestd_socket: str = "/run/slurmrestd/slurmrestd.socket"
    # The agent's copy of the key and its configuration
    agent_key_path: str = "/var/lib/slurm-web/slurmrestd.key"
    agent_user: str = "slurm-web"
    agent_group: str = "slurm-web"
    agent_key_mode: int = 0o400
    agent_ini: str = "/etc/slurm-web/agent.ini"
    jwt_user: str | None = None
    jwt_lifespan: int | None = None
    # None = the unit(s) in use among AGENT_UNITS (watchdog_daemon.system.agentunits)
    agent_unit: str | None = None
    # Host-side tool
    tool_prefix: str = "/opt/slurmrestd-access"
    tool_link: str = "/usr/local/bin/slurmrestd-access"
    check_timeout: int = 20
    # How long to wait for a restarted daemon to answer
    restart_wait: int = 60
    # How often the watchdog proves the agent can serve (watch.toml's health_interval)
    watch_health_interval: int = 60
    # The watchdog's Prometheus metrics, "127.0.0.1:PORT" (loopback only); None = off
    watch_metrics: str | None = None
    # The least time between two agent restarts by the watchdog (watch.toml's restart_spacing);
    # None = the daemon's default
    watch_restart_spacing: float | None = None
    # Go on on a Slurm older than Slurm-web's agent can use (24.05): JWT for other REST clients.
    allow_unsupported_slurm: bool = False
    # The Slurm-web release of the agent host ("5.2", "6.0"), read only where neither the
    # package manager nor the agent's vendor definitions name it (watchdog_daemon slurmweb).
    slurmweb_release: str | None = None

    @property
    def socket_uri(self) -> str:
        return f"unix://{self.slurmrestd_socket}"

    @property
    def tool(self) -> str:
        return self.tool_link


def _slurmweb_release(host: str, value: Any) -> str:
    from watchdog_daemon.config.slurmweb import SERIES, parse_version

    # A string only: a number would lose what it says (6.10 reads as 6.1).
    text = value if isinstance(value, str) else ""
    version = parse_version(text)
    if version is None or version[0] not in SERIES:
        known = ", ".join(f'"{s}.x"' for s in SERIES)
        raise SettingsError(f"{host}: slurmweb_release={value!r} is not a Slurm-web release this "
                            f'tool knows (a string such as "5.2" or "6.0"; series {known})')
    return text


def _as_mode(host: str, name: str, value: Any) -> int:
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3,4}", value):
        mode = int(value.replace("o", ""), 8)
    else:
        raise SettingsError(f"{host}: {name}={value!r} is not a file mode; write it like '0600'")
    if mode & ~0o7777:
        raise SettingsError(f"{host}: {name}={value!r} is not a file mode; write it like '0600'")
    # What the host tool accepts for each file (the watchdog's copy_mode, `key ensure`): Slurm's
    # key at most owner rw and group r, the agent's copy owner-only. This also catches a mode
    # read as a decimal number (pyinfra's command line makes 400 of `agent_key_mode=0400`).
    allowed = 0o600 if name == "agent_key_mode" else 0o640
    if mode & ~allowed or not mode & 0o400:
        most = "owner-only (0400 or 0600)" if allowed == 0o600 else \
            "at most owner read-write and group read (0640)"
        raise SettingsError(f"{host}: {name}={value!r} is mode {mode:04o}: a key file's mode is "
                            f"{most} and lets its owner read it; write it as the string '0400' "
                            "(a bare 0400 on pyinfra's command line is the decimal 400) or as "
                            "0o400")
    return mode


def _watch_metrics(host: str, value: Any) -> str:
    """The watchdog's own rule (loopback HOST:PORT), checked here so that a wrong value stops
    the run before any change instead of the daemon at its start."""
    from watchdog_daemon.watch.config import WatchConfigError, config_from_mapping

    if not isinstance(value, str):
        raise SettingsError(f"{host}: watch_metrics={value!r} must be a string like "
                            "'127.0.0.1:9812'")
    try:
        config_from_mapping({"metrics": value})
    except WatchConfigError as exc:
        raise SettingsError(f"{host}: watch_metrics={value!r}: {exc}") from None
    return value


def _hint(key: str, known: list[str]) -> str:
    """The setting a wrong name likely meant, else where the settings are listed."""
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"did you mean {near[0]!r}?" if near else \
        "see the settings in docs/deploy.md, \"Host-data settings\""


def misspelt_settings(data: dict[str, Any]) -> list[str]:
    """Host data keys that look like a setting but are none: a near miss of a setting's name,
    or a name under the deploy's own prefixes. A site's other data and pyinfra's stay allowed."""
    known = [f.name for f in fields(Settings)]
    problems = []
    for key in sorted(k for k in data if isinstance(k, str)):
        if key in known or key.startswith(PYINFRA_PREFIXES):
            continue
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if not near and not key.startswith(OWN_PREFIXES):
            continue
        hint = _hint(key, known)
        problems.append(f"host data {key!r} is not a setting of this deploy: {hint}")
    return problems


def setting_names() -> list[str]:
    return [f.name for f in fields(Settings)]


def setting_keywords(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a deploy function taking `**keywords` the signature of every setting, each with its
    type and a default of None (= host data, else the setting's own default): what `help()`,
    editors and `inspect.signature` show, from the one list of settings there is."""
    hints = typing.get_type_hints(Settings)
    params = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=hints[f.name] | None)
              for f in fields(Settings)]
    func.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore
    return func


def unknown_keywords(keywords: dict[str, Any]) -> list[str]:
    """Keyword arguments of a deploy call that are no setting: every one is an error (unlike
    host data, a keyword has no other use), with the setting it likely meant."""
    known = setting_names()
    problems = []
    for key in sorted(k for k in keywords if k not in known):
        hint = _hint(key, known)
        problems.append(f"keyword {key!r} is not a setting of this deploy: {hint}")
    return problems


def with_keywords(data: dict[str, Any], keywords: dict[str, Any]) -> dict[str, Any]:
    """Host data under the deploy call's keywords: keyword > host data > default. A keyword
    given as None leaves the host data's value (or the default) in place."""
    return {**data, **{k: v for k, v in keywords.items() if v is not None}}


def settings_from_host_data(host_name: str, data: dict[str, Any],
                            keywords: dict[str, Any] | None = None) -> Settings:
    """Build and validate the settings of one host from its inventory data and the keywords
    the deploy was called with (which win)."""
    keywords = keywords or {}
    wrong = unknown_keywords(keywords)
    if wrong:
        raise SettingsError("; ".join(wrong))
    typos = misspelt_settings(data)
    if typos:
        raise SettingsError(f"{host_name}: " + "; ".join(typos))
    data = with_keywords(data, keywords)
    cluster = data.get("cluster")
    if not cluster or not isinstance(cluster, str) or not _CLUSTER_NAME.match(cluster):
        raise SettingsError(
            f"{host_name}: host data 'cluster' is missing or invalid ({cluster!r}); put the host "
            "in its cluster's group with data {'cluster': '<ClusterName of slurm.conf>'}"
        )
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {"cluster": cluster}
    for name in known - {"cluster"}:
        if data.get(name) is not None:
            values[name] = data[name]
    for name in ("jwt_key_mode", "agent_key_mode"):
        if name in values:
            values[name] = _as_mode(host_name, name, values[name])
    for name in ("jwt_lifespan", "check_timeout", "restart_wait", "slurmdbd_port",
                 "watch_health_interval"):
        if name in values:
            try:
                values[name] = int(values[name])
            except (TypeError, ValueError):
                raise SettingsError(
                    f"{host_name}: {name}={values[name]!r} is not a number"
                ) from None
            if values[name] <= 0:
                raise SettingsError(f"{host_name}: {name} must be positive")
    for name in ("jwt_key_owner", "jwt_key_group", "agent_user", "agent_group"):
        if name in values and not _USER_NAME.match(str(values[name])):
            raise SettingsError(f"{host_name}: {name}={values[name]!r} is not a user/group name")
    if "allow_unsupported_slurm" in values and not isinstance(values["allow_unsupported_slurm"],
                                                              bool):
        raise SettingsError(f"{host_name}: allow_unsupported_slurm must be True or False, not "
                            f"{values['allow_unsupported_slurm']!r}")
    if "watch_metrics" in values:
        values["watch_metrics"] = _watch_metrics(host_name, values["watch_metrics"])
    if "slurmweb_release" in values:
        values["slurmweb_release"] = _slurmweb_release(host_name, values["slurmweb_release"])
    if "watch_restart_spacing" in values:
        spacing = values["watch_restart_spacing"]
        if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) \
                or not 0 <= spacing <= MAX_RESTART_SPACING:
            raise SettingsError(f"{host_name}: watch_restart_spacing={spacing!r} must be a "
                                f"number of seconds from 0 to {MAX_RESTART_SPACING:g}")
        values["watch_restart_spacing"] = float(spacing)
    unit = values.get("agent_unit")
    if unit is not None and not _UNIT_NAME.match(unit):
        raise SettingsError(f"{host_name}: agent_unit={unit!r} is not a systemd service name")
    for name, value in values.items():
        if (name.endswith(("_path", "_conf", "_dropin", "_socket", "_ini", "_prefix", "_link"))
                and isinstance(value, str) and not value.startswith("/")):
            raise SettingsError(f"{host_name}: {name}={value!r} must be an absolute path")
    if values.get("key_source_file") and values.get("key_source_command"):
        raise SettingsError(
            f"{host_name}: set key_source_file or key_source_command, not both"
        )
    if values.get("key_source_encoding", "raw") not in ("raw", "base64"):
        raise SettingsError(f"{host_name}: key_source_encoding must be 'raw' or 'base64'")
    return Settings(**values)
