"""Which Slurm-web release an agent host runs, and what that release asks of slurmrestd.

Pure but for `detect` and its two readers. The releases differ exactly where this tool's promise
lives (each tag's own `conf/vendor/agent.yml`, read at v4.2.0, v5.2.0 and v6.0.0; the table is
tests/fixtures/slurmweb-agent-definitions.json, which the unit tests hold these rules against):

* 4.x and 5.x ask slurmrestd for one REST API version, `[slurmrestd] version` (default 0.0.40
  for 4.2, 0.0.41 for 5.2), with no discovery: every call goes to `/slurm/v{version}/...`;
* 6.x discovers one among `[slurmrestd] versions` (default 0.0.44, 0.0.43, 0.0.42, 0.0.41),
  keeps `version` only as a deprecated key it ignores, and adds `[slurmrestd] versions`,
  `[cache] associations` and `[filters] associations`, which 4.x and 5.x refuse at start.

What decides, and why (docs/releases.md):

1. The release's NAME comes from the package manager (`slurm-web-agent`, dpkg or rpm): it
   names what the admin installed, in the admin's words.
2. What the agent DOES comes from its vendor definitions at `/usr/share/slurm-web/conf/agent.yml`,
   the file the agent itself loads its defaults from (a package or a source install puts it
   there): its API default(s) and the keys agent.ini may hold. Without a package, their shape
   tells the series (`versions` defined: 6.x; else the `version` default: 0.0.40 4.x, 5.x).
3. Host data (`slurmweb_release = "5.2"`) names the release only where neither is found, and
   must agree with them where they are.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchdog_daemon.config import slurmrelease

VENDOR_DEFINITIONS = "/usr/share/slurm-web/conf/agent.yml"
PACKAGE = "slurm-web-agent"
SERIES = (4, 5, 6)
NEWEST = 6
# The tag each series' built-in table was read from (tests/fixtures: the same tags).
REFERENCE = {4: "4.2.0", 5: "5.2.0", 6: "6.0.0"}
# `[slurmrestd] version` defaults of the releases without discovery.
DEFAULT_VERSION = {4: "0.0.40", 5: "0.0.41"}
DEFAULT_VERSIONS = ("0.0.44", "0.0.43", "0.0.42", "0.0.41")
# The keys 6.0 added; 4.x and 5.x refuse them at start.
ONLY_FROM_6 = (("slurmrestd", "versions"), ("filters", "associations"),
               ("cache", "associations"))
MAX_DEFINITIONS_BYTES = 1 << 20  # the real file is ~20 KiB
COMMAND_TIMEOUT = 15.0

Definitions = Mapping[str, Mapping[str, Mapping[str, Any]]]


class ReleaseError(Exception):
    """The agent's release cannot be known, or what is known contradicts itself."""

    def __init__(self, message: str, hint: str) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} — {hint}")


# ---- releases and what they ask --------------------------------------------------------------

_VERSION_RE = re.compile(r"^(?:\d+:)?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, ...] | None:
    """(major, minor, ...) of `5.2.0`, `5.2`, `1:6.0.0-1`, `6`; None when it is not one."""
    m = _VERSION_RE.match((text or "").strip())
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def series_of_definitions(definitions: Definitions) -> int | None:
    """The series a vendor agent.yml belongs to, from its shape; None when it is not one."""
    rest = definitions.get("slurmrestd")
    if not isinstance(rest, Mapping):
        return None
    if "versions" in rest:
        return 6
    version = rest.get("version")
    if isinstance(version, Mapping):
        return 4 if str(version.get("default")) == DEFAULT_VERSION[4] else 5
    return None


@dataclass(frozen=True)
class AgentRelease:
    """The Slurm-web agent release of one host: what it is called, and what it does."""

    series: int
    version: str = ""  # the release as the package or host data names it ("5.2.0-1", "5.2")
    source: str = ""  # "dpkg", "rpm", "vendor definitions", "host data", "" (built in)
    definitions: Definitions | None = None  # its vendor agent.yml, when read
    definitions_path: str = ""

    @property
    def name(self) -> str:
        """`Slurm-web 5.2.0` or `Slurm-web 5.x` (for messages)."""
        if self.version:
            core = parse_version(self.version)
            return "Slurm-web " + (".".join(str(p) for p in core) if core else self.version)
        return f"Slurm-web {self.series}.x"

    @property
    def discovers(self) -> bool:
        """Whether it discovers the API version among a list (6.x) or asks for one (4.x, 5.x)."""
        return self.series >= 6

    def schema(self) -> dict[str, dict[str, str]]:
        """section -> key -> type that agent.ini may hold for this release."""
        if self.definitions:
            return {section: {key: str(d.get("type", "str")) for key, d in keys.items()}
                    for section, keys in self.definitions.items() if isinstance(keys, Mapping)}
        return builtin_schema(self.series)

    def choices(self) -> dict[tuple[str, str], tuple[str, ...]]:
        if self.definitions:
            return {(section, key): tuple(str(c) for c in d["choices"])
                    for section, keys in self.definitions.items() if isinstance(keys, Mapping)
                    for key, d in keys.items() if isinstance(d.get("choices"), list)}
        from watchdog_daemon.config.agentconf import AGENT_CHOICES

        return dict(AGENT_CHOICES)

    def default_api_versions(self) -> tuple[str, ...]:
        """The API version(s) it uses when agent.ini says nothing, in the order it tries them."""
        key = "versions" if self.discovers else "version"
        if self.definitions:
            param = (self.definitions.get("slurmrestd") or {}).get(key)
            found = param.get("default") if isinstance(param, Mapping) else None
            if isinstance(found, list) and found:
                return tuple(str(v) for v in found)
            if isinstance(found, (str, int, float)) and str(found):
                return (str(found),)
        return DEFAULT_VERSIONS if self.discovers else (DEFAULT_VERSION.get(self.series, "0.0.41"),)

    def api_versions(self, version: str | None, versions: Sequence[str] | None
                     ) -> tuple[str, ...]:
        """What it asks slurmrestd for, given agent.ini's `version` and `versions` (None: unset).

        6.x ignores the deprecated `version`; 4.x and 5.x have no `versions`."""
        if self.discovers:
            return tuple(versions) if versions else self.default_api_versions()
        return (version,) if version else self.default_api_versions()

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "series": self.series, "version": self.version,
                "source": self.source, "definitions": self.definitions_path or None,
                "discovers": self.discovers, "api_versions": list(self.default_api_versions())}


def builtin_schema(series: int) -> dict[str, dict[str, str]]:
    """The built-in table of a series (6.0's definitions less what 6.0 added, for 4.x and 5.x)."""
    from watchdog_daemon.config.agentconf import AGENT_SCHEMA

    schema = {section: dict(keys) for section, keys in AGENT_SCHEMA.items()}
    if series < 6:
        for section, key in ONLY_FROM_6:
            schema[section].pop(key, None)
    return schema


# ---- Slurm and Slurm-web together ----------------------------------------------------------------

def _api_number(version: str) -> int | None:
    parts = version.split(".")
    return int(parts[-1]) if len(parts) == 3 and all(p.isdigit() for p in parts) else None


def served_by(release: slurmrelease.Release) -> tuple[str, ...] | None:
    """The REST API versions a Slurm release serves, oldest first; None when not known."""
    served = slurmrelease.API_VERSIONS.get(tuple(release[:2]))
    if served is None:
        return None
    low, high = _api_number(served[0]), _api_number(served[1])
    assert low is not None and high is not None
    return tuple(f"0.0.{n}" for n in range(low, high + 1))


def slurm_releases_for(api_versions: Sequence[str]) -> list[slurmrelease.Release]:
    """The Slurm releases (of the table) that serve at least one of these versions."""
    return [(*r, 0) for r in sorted(slurmrelease.API_VERSIONS)
            if set(served_by((*r, 0)) or ()) & set(api_versions)]


def series_for(served: Sequence[str]) -> list[int]:
    """The Slurm-web series whose default API choice a slurmrestd serving `served` serves."""
    return [s for s in SERIES if set(served) & set(AgentRelease(s).default_api_versions())]


@dataclass(frozen=True)
class Pairing:
    ok: bool
    message: str
    hint: str = ""
    api_version: str | None = None  # the version the agent will use, when known


def pairing(agent: AgentRelease, api_versions: Sequence[str],
            slurm: slurmrelease.Release | None) -> Pairing:
    """Can this agent, asking for `api_versions`, work with this Slurm release? Unknown Slurm
    releases pass (the check, asking slurmrestd itself, decides then)."""
    uses = ", ".join(api_versions)
    asks = (f"discovers its REST API among {uses}" if agent.discovers and len(api_versions) > 1
            else f"uses REST API {uses}")
    if slurm is None:
        return Pairing(True, f"{agent.name} {asks}; Slurm's release is not known")
    served = served_by(slurm)
    if served is None:
        return Pairing(True, f"{agent.name} {asks}; Slurm {slurmrelease.short(slurm)} is not in "
                             "this tool's table: the check will ask slurmrestd")
    for version in api_versions:
        if version in served:
            return Pairing(True, f"{agent.name} {asks}; Slurm {slurmrelease.short(slurm)} serves "
                                 f"{served[0]} to {served[-1]}", api_version=version)
    return Pairing(False, incompatible_message(agent, api_versions, served,
                                               f"Slurm {slurmrelease.short(slurm)}"),
                   remedy(agent, api_versions, served))


def incompatible_message(agent: AgentRelease, api_versions: Sequence[str],
                         served: Sequence[str], who: str) -> str:
    uses = ", ".join(api_versions)
    asks = (f"discovers its REST API among {uses}" if agent.discovers and len(api_versions) > 1
            else f"uses REST API {uses} only")
    range_text = f"{served[0]} to {served[-1]}" if served else "none of the versions known"
    return f"{agent.name} {asks}; {who} serves {range_text}: the agent cannot work with it"


def remedy(agent: AgentRelease, api_versions: Sequence[str],
           served: Sequence[str] | None) -> str:
    """What to do about an agent release whose API versions a slurmrestd serving `served`
    (None: not known) does not serve."""
    fixes = []
    if served:
        good = [s for s in series_for(served) if s != agent.series]
        if good:
            fixes.append("install Slurm-web " + " or ".join(f"{s}.x" for s in good))
    fits = slurm_releases_for(api_versions)
    if fits:
        low, high = slurmrelease.short(fits[0]), slurmrelease.short(fits[-1])
        fixes.append(f"run it with Slurm {low}" + (f" to {high}" if high != low else ""))
    if not agent.discovers:
        fixes.append("or set agent.ini's [slurmrestd] version to one this Slurm serves (the "
                     "agent is tested with its default only)")
    return "; ".join(fixes) if fixes else "install a Slurm-web release made for this Slurm"


# ---- reading the host ------------------------------------------------------------------------

def parse_definitions(text: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The settings table of a vendor agent.yml (RFL's definition format), read without a YAML
    library: section -> key -> {type, default, choices, required, deprecated, content}.
    Documentation strings are skipped. ValueError on a shape this reader does not know."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    section: dict[str, dict[str, Any]] | None = None
    param: dict[str, Any] | None = None
    prop: str | None = None  # a property whose value continues on the next lines
    block_indent: int | None = None  # inside a `|` or `>` block scalar, its key's indent
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if block_indent is not None:
            if not body or indent > block_indent:
                continue
            block_indent = None
        if not body or body.startswith("#") or body in ("---", "..."):
            continue
        if "\t" in raw[:indent + 1]:
            raise ValueError(f"line {number}: tab in indentation")
        if body.startswith("- "):
            if param is None or prop is None:
                raise ValueError(f"line {number}: a list item outside a property")
            current = param.get(prop)
            if not isinstance(current, list):
                current = param[prop] = []
            current.append(_scalar(body[2:]))
            continue
        key, sep, value = body.partition(":")
        if not sep or not key or " " in key.strip():
            raise ValueError(f"line {number}: not `key: value`")
        key, value = key.strip(), value.strip()
        if indent == 0:
            if value:
                raise ValueError(f"line {number}: a section with a value")
            section = table.setdefault(key, {})
            param = prop = None
        elif indent == 2:
            if section is None or value:
                raise ValueError(f"line {number}: a parameter outside a section")
            param = section.setdefault(key, {})
            prop = None
        elif indent == 4:
            if param is None:
                raise ValueError(f"line {number}: a property outside a parameter")
            if value in ("|", ">", "|-", ">-", "|+", ">+"):
                block_indent, prop = indent, None
                continue
            if key == "doc" or key == "ex":
                # Text only: skip it and any deeper line that continues it.
                prop, block_indent = None, indent
                continue
            if value:
                param[key] = _scalar(value)
                prop = None
            else:
                prop = key
                param[key] = None
        elif indent >= 6 and param is not None and prop is not None:
            holder = param.get(prop)
            if not isinstance(holder, dict):
                holder = param[prop] = {}
            holder[key] = _scalar(value)
        else:
            raise ValueError(f"line {number}: unexpected indentation")
    if not table:
        raise ValueError("no sections")
    return table


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(item) for item in text[1:-1].split(",") if item.strip()]
    lowered = text.lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    if lowered in ("null", "~"):
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def read_definitions(path: str = VENDOR_DEFINITIONS) -> str | None:
    """The vendor file's text; None when it does not exist. ReleaseError when it cannot be used
    (not a regular file, too large, unreadable, not UTF-8)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReleaseError(f"cannot read Slurm-web's vendor definitions {path}: "
                           f"{exc.strerror or type(exc).__name__}",
                           "run as root, or reinstall Slurm-web's agent") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DEFINITIONS_BYTES:
            raise ReleaseError(f"{path} is not a regular file of at most "
                               f"{MAX_DEFINITIONS_BYTES} bytes",
                               "reinstall Slurm-web's agent package")
        data = os.read(fd, MAX_DEFINITIONS_BYTES + 1)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ReleaseError(f"{path} is not UTF-8 text", "reinstall Slurm-web's agent") from None


def package_version(package: str = PACKAGE, timeout: float = COMMAND_TIMEOUT
                    ) -> tuple[str, str] | None:
    """(manager, version) of the installed agent package, None when no manager knows it."""
    queries = (
        ("dpkg", ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Version}", package]),
        ("rpm", ["rpm", "-q", "--qf", "ii |%{VERSION}-%{RELEASE}", package]),
    )
    for manager, argv in queries:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  check=False, env={**os.environ, "LC_ALL": "C"})
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = installed_version(done.stdout if done.returncode == 0 else "")
        if version:
            return manager, version
    return None


def installed_version(output: str) -> str | None:
    """The version in `dpkg-query -W -f '${db:Status-Abbrev}|${Version}'` output (or rpm's in
    the same shape), None unless the package is installed (`ii`)."""
    status, sep, version = output.strip().partition("|")
    if not sep or not status.startswith("ii") or parse_version(version) is None:
        return None
    return version.strip()


def decide(package: tuple[str, str] | None, definitions_text: str | None,
           declared: str | None = None, definitions_path: str = VENDOR_DEFINITIONS
           ) -> AgentRelease:
    """The agent release from what the host has (pure). ReleaseError when nothing names it, a
    source contradicts another, or the release is one this tool does not know."""
    definitions = None
    shape = None
    if definitions_text is not None:
        try:
            definitions = parse_definitions(definitions_text)
        except ValueError as exc:
            raise ReleaseError(f"{definitions_path} cannot be read as Slurm-web's vendor "
                               f"definitions ({exc})",
                               "reinstall Slurm-web's agent package") from None
        shape = series_of_definitions(definitions)
        if shape is None:
            raise ReleaseError(f"{definitions_path} defines no [slurmrestd] version(s): it is "
                               "not an agent's vendor definitions this tool knows",
                               "reinstall Slurm-web's agent package")
    named = None
    source = ""
    if package is not None:
        source, named = package
    elif declared:
        source, named = "host data", declared
    if declared and package is not None and _series(declared) != _series(named or ""):
        raise ReleaseError(
            f"host data says slurmweb_release = {declared!r}, but the installed package "
            f"{PACKAGE} is {named}", "remove slurmweb_release from the inventory (it is read "
            "only where no package names the release), or correct it")
    series = _series(named) if named else shape
    if series is None:
        if named:
            raise ReleaseError(f"cannot read a Slurm-web release from {named!r} ({source})",
                               'name it like "5.2" or "6.0"')
        raise ReleaseError(
            f"no Slurm-web agent found on this host (no {PACKAGE} package, no "
            f"{definitions_path})",
            "install Slurm-web's agent first; if it is installed elsewhere, name its release "
            'in the inventory: slurmweb_release = "5.2" (or "6.0")')
    if series not in SERIES:
        known = ", ".join(f"{s}.x" for s in SERIES)
        raise ReleaseError(f"{PACKAGE} {named} is not a Slurm-web release this tool knows "
                           f"({known})", "install a known release, or a newer slurmrestd-access")
    if shape is not None and shape != series:
        raise ReleaseError(
            f"{definitions_path} is Slurm-web {shape}.x's, but {source} says {named}",
            "reinstall Slurm-web's agent package (its files and its version disagree)")
    if source == "" and shape is not None:
        source = "vendor definitions"
    return AgentRelease(series=series, version=named or "", source=source,
                        definitions=definitions,
                        definitions_path=definitions_path if definitions is not None else "")


def add_release_arguments(parser: Any) -> None:
    """`--slurmweb-release` and `--agent-definitions`, for each command that reads agent.ini."""
    parser.add_argument("--slurmweb-release", default=None, metavar="RELEASE",
                        help="the Slurm-web release installed (e.g. 5.2), read only where "
                        "neither the package manager nor the vendor definitions name it")
    parser.add_argument("--agent-definitions", default=VENDOR_DEFINITIONS, metavar="PATH",
                        help=f"the agent's vendor definitions (default {VENDOR_DEFINITIONS})")


def _series(text: str) -> int | None:
    version = parse_version(text)
    return version[0] if version else None


def detect(declared: str | None = None, *, definitions_path: str = VENDOR_DEFINITIONS
           ) -> AgentRelease:
    """The agent release of this host (package manager, vendor definitions, then `declared`)."""
    return decide(package_version(), read_definitions(definitions_path), declared,
                  definitions_path)


__all__ = [
    "PACKAGE",
    "VENDOR_DEFINITIONS",
    "AgentRelease",
    "Pairing",
    "ReleaseError",
    "builtin_schema",
    "decide",
    "detect",
    "pairing",
    "parse_definitions",
]
