"""Configuration of `slurmrestd-access watch`: a small TOML file, the seed's paths as defaults.

A missing file means "all defaults" (the common case: one agent host, seed layout). Any value
that is present but wrong stops the daemon at start with one clear message (exit CONFIG_INVALID):
a daemon that guesses around a typo would silently watch the wrong file for months.

Every key lives at the top level of the file, for example::

    key_path = "/var/spool/slurm/jwt_hs256.key"
    copy_path = "/var/lib/slurm-web/slurmrestd.key"
    agent_units = ["slurm-web-agent-uwsgi.service"]
    metrics = "127.0.0.1:9812"
"""

from __future__ import annotations

import dataclasses
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# tomllib is 3.11+; on older host Pythons (3.9, 3.10) the same parser comes as tomli.
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the 3.9 testbed host
    import tomli as tomllib

from watchdog_daemon.system.agentunits import AGENT_UNITS

DEFAULT_CONFIG_PATH = Path("/etc/slurmrestd-access/watch.toml")
DEFAULT_AGENT_UNITS: tuple[str, ...] = AGENT_UNITS


class WatchConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class WatchConfig:
    config_path: Path | None = None  # where the values came from (None: built-in defaults only)

    key_path: Path = Path("/var/spool/slurm/jwt_hs256.key")
    copy_path: Path = Path("/var/lib/slurm-web/slurmrestd.key")
    copy_owner: str = "slurm-web"
    copy_group: str = "slurm-web"
    copy_mode: int = 0o400
    agent_ini: Path = Path("/etc/slurm-web/agent.ini")
    # The Slurm-web release, where neither its package nor its vendor definitions name it
    # (config/slurmweb.py); None: they must.
    slurmweb_release: str | None = None
    # "auto": the ones in use among DEFAULT_AGENT_UNITS (agentunits); or an explicit list.
    agent_units: tuple[str, ...] | None = None

    # Safety net for lost events and file systems without inotify (NFS): one hash per interval.
    reconcile_interval: float = 30.0
    # Extra wait after the last rename event before a run. 0 by default: a rename is complete
    # at once, and bursts of renames are already coalesced (a) by the single worker (every
    # change during a run means one more run, with the final content), (b) by verify-first:
    # real Slurm rejects an intermediate key until reconfigured, by which time the final one is
    # in place, and (c) by restart_spacing for restarts. Only when Slurm accepts every new key
    # the instant it is renamed (a key pushed after Slurm reloaded) can two renames 200 ms
    # apart give two syncs; `coalesce = 0.25` makes that one sync, at +250 ms per rotation.
    coalesce: float = 0.0
    # In-place writes (modified events, or a change seen by the reconcile) are acted upon only
    # once size, mtime and inode stayed the same this long, giving up after quiet_cap.
    quiet: float = 0.2
    quiet_cap: float = 5.0

    # While Slurm still accepts only the agent's current key, a token signed with that copy is
    # sent every probe_interval seconds (slurmctld, and slurmdbd until it switches): accepted
    # means "not reloaded yet" and logs nothing in Slurm; its first refusal means Slurm switched,
    # and the new key is verified at once. It bounds how long the agent stays on a refused key.
    probe_interval: float = 0.5
    # Retries when no probe is possible (the copy unreadable, every daemon refused both keys):
    # base * 2**n seconds, capped, jittered; also between failed restarts.
    backoff_base: float = 1.0
    backoff_cap: float = 30.0

    # Minimum time between two of our restarts of the agent (at most MAX_RESTART_SPACING):
    # systemd refuses a unit started more than StartLimitBurst=5 times in
    # StartLimitIntervalSec=10s (defaults), counting its own Restart= attempts too.
    restart_spacing: float = 2.0
    # Consecutive FAILED restarts (the unit does not come back, or the check after it fails)
    # that open the circuit; while open no restart is attempted (syncs and checks go on); one
    # trial restart after the cool-down, or at once for a new key Slurm accepts. There is no
    # budget on successful restarts: each follows a key Slurm was just proven to accept.
    circuit_threshold: int = 3
    circuit_cooldown: float = 600.0
    restart_timeout: float = 90.0  # systemctl restart + waiting until active
    # Per HTTP call of verify/check (FACTS: an unreachable slurmctld hangs calls for 10-19 s).
    check_timeout: float = 10.0
    accounting: str = "auto"  # slurmdbd check: "auto" | "yes" | "no" (as `slurmrestd-access check`)
    # Read (Include lines followed) for AccountingStorageType when accounting is "auto".
    slurm_conf: Path = Path("/etc/slurm/slurm.conf")

    # Every health_interval seconds (and at start, and after every run that changed something)
    # the daemon proves the agent can serve (watch/proof.py): its unit active and started
    # after the copy, a token signed with the copy accepted by slurmctld and slurmdbd. Two
    # /diag calls and one systemctl show a minute by default: `status` is at most this old.
    health_interval: float = 60.0

    metrics: tuple[str, int] | None = None  # opt-in, loopback only
    state_file: Path = Path("/run/slurmrestd-access/watch-state.json")
    # Settings read but not used (deprecated or clamped), one sentence each: logged at start.
    warnings: tuple[str, ...] = ()

    @property
    def copy_dir(self) -> Path:
        return self.copy_path.parent

    @property
    def proof_max_age(self) -> float:
        """How old the last proof may be before `status` calls the daemon stuck: one interval,
        then the next proof and a sync run before it, each of up to three calls that all ran to
        their timeout (a proof is taken between runs, never during one)."""
        return self.health_interval + 6 * self.check_timeout


_PATHS = ("key_path", "copy_path", "agent_ini", "state_file", "slurm_conf")
_STRINGS = ("copy_owner", "copy_group")
_POSITIVE = (
    "reconcile_interval",
    "quiet_cap",
    "backoff_base",
    "backoff_cap",
    "probe_interval",
    "circuit_cooldown",
    "restart_timeout",
    "check_timeout",
    "health_interval",
)
_NON_NEGATIVE = ("coalesce", "quiet", "restart_spacing")
_COUNTS = ("circuit_threshold",)
_KNOWN = frozenset(
    {f.name for f in dataclasses.fields(WatchConfig)} - {"config_path", "warnings"}
)
# Removed settings still accepted (and ignored, with a warning), so that a watch.toml written
# for an older version does not stop the daemon at start: a watchdog that does not run leaves
# the agent on a refused key at the next rotation, the very outage it is there to prevent.
DEPRECATED: dict[str, str] = {
    "restart_budget": "successful restarts are no longer limited (each follows a key Slurm "
                      "accepts); failed restarts open the circuit (circuit_threshold)",
    "restart_window": "successful restarts are no longer limited (each follows a key Slurm "
                      "accepts); failed restarts open the circuit (circuit_threshold)",
}
MAX_RESTART_SPACING = 10.0


def load_watch_config(path: Path | str | None = None) -> WatchConfig:
    """Read the config file (DEFAULT_CONFIG_PATH when None). Missing file: all defaults."""
    explicit = path is not None
    cfg_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        raw = cfg_path.read_bytes()
    except FileNotFoundError:
        if explicit:
            # Asked for by name: a typo in --config must not silently mean "defaults".
            raise WatchConfigError(f"{cfg_path}: no such file") from None
        return WatchConfig()
    except OSError as exc:
        raise WatchConfigError(f"{cfg_path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise WatchConfigError(f"{cfg_path}: not valid TOML: {exc}") from None
    return config_from_mapping(data, source=cfg_path)


def config_from_mapping(data: dict[str, Any], *, source: Path | None = None) -> WatchConfig:
    where = str(source) if source else "watch config"
    unknown = sorted(set(data) - _KNOWN - set(DEPRECATED))
    if unknown:
        raise WatchConfigError(f"{where}: unknown setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {"config_path": source}
    warnings: list[str] = []
    for name, value in data.items():
        if name in DEPRECATED:
            warnings.append(f"{where}: {name} is ignored: {DEPRECATED[name]}; remove it")
            continue
        values[name] = _convert(where, name, value)
    spacing = values.get("restart_spacing", 0.0)
    if spacing > MAX_RESTART_SPACING:
        # A long spacing would leave the agent on a refused key after a quick second rotation.
        warnings.append(f"{where}: restart_spacing = {spacing:g} s is more than "
                        f"{MAX_RESTART_SPACING:g} s: using {MAX_RESTART_SPACING:g} s")
        values["restart_spacing"] = MAX_RESTART_SPACING
    values["warnings"] = tuple(warnings)
    cfg = WatchConfig(**values)
    _cross_check(where, cfg)
    return cfg


def _convert(where: str, name: str, value: Any) -> Any:
    def bad(expected: str) -> WatchConfigError:
        return WatchConfigError(f"{where}: {name} = {value!r}: expected {expected}")

    if name in _PATHS:
        if not isinstance(value, str) or not value.startswith("/"):
            raise bad("an absolute path")
        return Path(value)
    if name in _STRINGS:
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise bad("a user or group name")
        return value
    if name in _POSITIVE or name in _NON_NEGATIVE:
        # bool is an int in Python; `quiet = true` is a typo, not 1 second.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number of seconds")
        if value < 0 or (name in _POSITIVE and value == 0):
            raise bad("a positive number of seconds" if name in _POSITIVE else ">= 0 seconds")
        return float(value)
    if name in _COUNTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("a whole number >= 1")
        return value
    if name == "copy_mode":
        return _mode(value, bad)
    if name == "agent_units":
        if value == "auto":
            return None
        if isinstance(value, str):
            value = [value]
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(u, str) and u.endswith(".service") for u in value)
        ):
            raise bad('"auto" or a list of unit names ending in .service')
        return tuple(value)
    if name == "accounting":
        if value not in ("auto", "yes", "no"):
            raise bad('"auto", "yes" or "no"')
        return value
    if name == "metrics":
        return _listen_address(value, bad)
    if name == "slurmweb_release":
        from watchdog_daemon.config.slurmweb import parse_version

        if not isinstance(value, str) or parse_version(value) is None:
            raise bad('a Slurm-web release such as "5.2" or "6.0"')
        return value
    raise bad("a known setting")  # pragma: no cover - _KNOWN and the branches above agree


def _mode(value: Any, bad: Any) -> int:
    # Accept 0o400 (TOML octal literal), 256 or "0400"; the copy must stay owner-only.
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise bad('an octal mode such as "0400"') from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise bad('an octal mode such as "0400"')
    if value & 0o077:
        raise bad("an owner-only mode (no group or other bits): the copy is a secret")
    if not value & 0o400:
        raise bad("a mode that lets the owner read the copy")
    return value


def _listen_address(value: Any, bad: Any) -> tuple[str, int] | None:
    if value is False or value == "":
        return None
    if not isinstance(value, str):
        raise bad('"127.0.0.1:PORT" (loopback only)')
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad('"HOST:PORT" with a port 1-65535')
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise bad("a loopback IP address (metrics are never exposed off the host)") from None
    if not ip.is_loopback:
        raise bad("a loopback IP address (metrics are never exposed off the host)")
    return (str(ip), int(port_text))


def _cross_check(where: str, cfg: WatchConfig) -> None:
    if cfg.key_path == cfg.copy_path:
        raise WatchConfigError(f"{where}: key_path and copy_path are the same file")
    if cfg.key_path.parent == cfg.copy_path.parent:
        # Our temp files and stale-temp clean-up live in the copy's directory; sharing it with
        # Slurm's key would put us next to a file we must never touch.
        raise WatchConfigError(f"{where}: copy_path must not be in the key's directory")
    if cfg.backoff_cap < cfg.backoff_base:
        raise WatchConfigError(f"{where}: backoff_cap is smaller than backoff_base")
    if cfg.quiet_cap < cfg.quiet:
        raise WatchConfigError(f"{where}: quiet_cap is smaller than quiet")
