"""Read /etc/slurm-web/agent.ini the way the Slurm-web agent does, and say what it refuses.

The agent layers agent.ini over its vendor definitions (`conf/vendor/agent.yml`) with RFL's
settings loader. What that loader does decides whether the agent starts at all, so it is
followed here rule by rule (read from Slurm-web 4.2.0, 5.2.0, 6.0.0 and RFL 1.4 to 1.9, and run
against them), with the definitions of the release installed (config/slurmweb.py; 6.0's when
none is given):

* `configparser.ConfigParser` with **extended interpolation**: `$` is special (`$$` is a literal
  `$`, `${key}` / `${section:key}` substitute, a lone `$` is an error), `%` is not;
* option names are lower-cased, section names are case-sensitive, no inline comments;
* a section the definitions do not have, or a key a section does not define, stops the agent;
  `[DEFAULT]` keys spill into every section, so each of them must be defined in every section
  present (in practice: no `[DEFAULT]` keys at all);
* ints are `int(text)`, bools are 1/yes/true/on or 0/no/false/off, lists are one item per line
  (`versions` is NOT split on commas), `auth` and `jwt_mode` take only their choices;
* `[service] cluster` is required (an empty value passes);
* a deprecated key (`socket`) is ignored when the key that replaces it (`uri`) is set too, else
  it stands for it (RFL's `deprecated` rule, measured with RFL.settings 1.4 to 1.9 on each
  release's definitions: `uri` wins over `socket`).

Pure functions of the text (`agent_ini_problems`, `parse_agent_ini`) so it is all tested without
files; `load_agent_settings` adds the reading. Messages name lines and keys, never values: a value
may be a static token.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.keys.secret import SecretBytes

if TYPE_CHECKING:
    from watchdog_daemon.config.slurmweb import AgentRelease

DEFAULT_AGENT_INI = "/etc/slurm-web/agent.ini"
DEFAULT_URI = "unix:///run/slurmrestd/slurmrestd.socket"
DEFAULT_AUTH = "jwt"
DEFAULT_JWT_MODE = "auto"
DEFAULT_JWT_USER = "slurm"
DEFAULT_JWT_LIFESPAN = 3600
DEFAULT_JWT_KEY = "/var/lib/slurm-web/slurmrestd.key"
# The agent's `versions` default: what it asks `/slurm/v{ver}/ping` for, in this order.
AGENT_DEFAULT_VERSIONS: tuple[str, ...] = ("0.0.44", "0.0.43", "0.0.42", "0.0.41")
JWT_MODES = ("auto", "static")
AUTH_CHOICES = ("local", "jwt")
_FLAG_CHOICES = ("slurmweb", "rfl", "werkzeug", "urllib3", "racksdb", "ALL")

# The agent's settings definitions (Slurm-web 6.0 conf/vendor/agent.yml): section -> key -> type.
# tests/unit/test_agent_definitions.py holds them against that file's table (tests/fixtures/).
AGENT_SCHEMA: dict[str, dict[str, str]] = {
    "service": {"cluster": "str", "interface": "str", "port": "int", "cors": "bool",
                "debug": "bool", "log_flags": "list", "debug_flags": "list"},
    "slurmrestd": {"uri": "uri", "socket": "path", "auth": "str", "jwt_mode": "str",
                   "jwt_user": "str", "jwt_lifespan": "int", "jwt_key": "path",
                   "jwt_token": "password", "version": "str", "versions": "list"},
    "filters": {k: "list" for k in ("jobs", "acctjob", "ctldjob", "nodes", "node", "partitions",
                                    "qos", "reservations", "accounts", "associations")},
    "policy": {"definition": "path", "vendor_roles": "path", "roles": "path"},
    "jwt": {"key": "path", "algorithm": "str", "audience": "str"},
    "racksdb": {"enabled": "bool", "db": "path", "schema": "path", "extensions": "path",
                "drawings_schema": "path", "infrastructure": "str", "tags": "list"},
    "cache": {"enabled": "bool", "host": "str", "port": "int", "password": "password",
              **{k: "int" for k in ("version", "jobs", "job", "nodes", "node", "partitions",
                                    "qos", "reservations", "accounts", "associations")}},
    "metrics": {"enabled": "bool", "restrict": "list", "host": "uri", "job": "str"},
}
AGENT_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("slurmrestd", "auth"): AUTH_CHOICES,
    ("slurmrestd", "jwt_mode"): JWT_MODES,
    ("service", "log_flags"): _FLAG_CHOICES,
    ("service", "debug_flags"): _FLAG_CHOICES,
    ("jwt", "algorithm"): ("HS256", "HS384", "HS512", "ES256", "ES256K", "ES384", "ES512",
                          "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"),
}
_BOOLS = {"1": True, "yes": True, "true": True, "on": True,
          "0": False, "no": False, "false": False, "off": False}


class ConfigError(Exception):
    """agent.ini is missing, malformed or incomplete. Never carries setting values."""

    exit_code = ExitCode.CONFIG_INVALID

    def __init__(self, message: str, hint: str, path: str | None = None,
                 line: int | None = None) -> None:
        self.message = message
        self.hint = hint
        self.path = path
        self.line = line
        super().__init__(f"{message} — {hint}")


@dataclass(frozen=True)
class SettingsProblem:
    """One reason the agent would refuse to start with this agent.ini."""

    detail: str  # what is wrong, without the file and line
    hint: str
    section: str | None = None
    key: str | None = None
    line: int | None = None
    where: str = "agent.ini"
    spilled: bool = False  # a [DEFAULT] key, refused in a section that has no such setting

    @property
    def message(self) -> str:
        return f"{self.where}: line {self.line}: {self.detail}" if self.line else \
            f"{self.where}: {self.detail}"


@dataclass(frozen=True)
class AgentSettings:
    cluster: str
    uri: str = DEFAULT_URI
    auth: str = DEFAULT_AUTH
    jwt_mode: str = DEFAULT_JWT_MODE
    jwt_user: str = DEFAULT_JWT_USER
    jwt_lifespan: int = DEFAULT_JWT_LIFESPAN
    jwt_key: Path = Path(DEFAULT_JWT_KEY)
    # None: the release's default list (6.x); `version`: the one version of 4.x and 5.x.
    versions: tuple[str, ...] | None = None
    version: str | None = None
    # Static-mode token: a secret too, kept wrapped.
    jwt_token: SecretBytes | None = None
    # The agent release these settings were read for (None: 6.0's rules, from before releases).
    release: AgentRelease | None = None

    @property
    def socket_path(self) -> Path | None:
        """The unix socket path of a `unix://` URI, None for other schemes."""
        parts = urlsplit(self.uri)
        if parts.scheme != "unix":
            return None
        # unix:///run/x.socket -> netloc "" path "/run/x.socket"; tolerate unix:/run/x too.
        return Path(unquote(parts.netloc + parts.path))

    @property
    def api_versions(self) -> tuple[str, ...]:
        """The versions the agent asks slurmrestd for, in its order (one for 4.x and 5.x)."""
        if self.release is not None:
            return self.release.api_versions(self.version, self.versions)
        return self.versions if self.versions is not None else AGENT_DEFAULT_VERSIONS

    @property
    def api_versions_from_agent_ini(self) -> bool:
        """Whether agent.ini chose the versions (not the release's default)."""
        if self.release is not None and not self.release.discovers:
            return self.version is not None
        return self.versions is not None


def _where(path: str | None) -> str:
    return path or "agent.ini"


_SECTION_LINE = re.compile(r"\[(?P<header>.+)\]")  # configparser.SECTCRE
_OPTION_LINE = re.compile(r"(?P<option>.*?)\s*[=:]")


def option_lines(text: str) -> dict[tuple[str, str], int]:
    """(section, lower-cased key) -> the 1-based line where it is set, as configparser reads it."""
    found: dict[tuple[str, str], int] = {}
    section: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(("#", ";")) or raw[:1].isspace():
            continue  # blank, comment, or a continuation line
        header = _SECTION_LINE.match(stripped)
        if header:
            section = header.group("header")
            found.setdefault((section, ""), number)
            continue
        option = _OPTION_LINE.match(stripped)
        if section is not None and option and option.group("option").strip():
            found.setdefault((section, option.group("option").strip().lower()), number)
    return found


def _read(text: str, where: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=configparser.ExtendedInterpolation())
    try:
        parser.read_string(text, source=where)
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(
            f"{where}: line {exc.lineno}: content before the first [section] header",
            "start the file with a section such as [service]", line=exc.lineno,
        ) from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(
            f"{where}: line {exc.lineno}: section [{exc.section}] appears twice",
            "merge the two sections into one", line=exc.lineno,
        ) from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(
            f"{where}: line {exc.lineno}: key {exc.option!r} appears twice in [{exc.section}]",
            "keep only one of them", line=exc.lineno,
        ) from None
    except configparser.ParsingError as exc:
        lines = ", ".join(str(lineno) for lineno, _line in exc.errors)
        first = exc.errors[0][0] if exc.errors else None
        raise ConfigError(
            f"{where}: cannot parse line(s) {lines}",
            "each line must be `key = value`, a [section] header or a comment", line=first,
        ) from None
    except configparser.Error as exc:
        raise ConfigError(f"{where}: malformed ({type(exc).__name__})",
                          "check the file's INI syntax") from None
    return parser


def _convert(kind: str, text: str) -> object:
    """The agent's conversion of a value; ValueError when it would refuse it."""
    if kind == "int":
        return int(text)
    if kind == "bool":
        if text.lower() not in _BOOLS:
            raise ValueError("not a boolean (yes/no, true/false, on/off, 1/0)")
        return _BOOLS[text.lower()]
    if kind == "list":
        return text.strip().split("\n")
    return text


def _definitions(release: AgentRelease | None
                 ) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], tuple[str, ...]], str]:
    """(schema, choices, whose) of a release; 6.0's built-in ones for None."""
    if release is None:
        return AGENT_SCHEMA, AGENT_CHOICES, "the agent"
    return release.schema(), release.choices(), f"the agent ({release.name})"


def _settings_values(parser: configparser.ConfigParser, where: str,
                     lines: dict[tuple[str, str], int], release: AgentRelease | None = None
                     ) -> tuple[dict[tuple[str, str], object], list[SettingsProblem]]:
    """Every value as the agent converts it, and every reason it would refuse to start."""
    schemas, choices_of, whose = _definitions(release)
    values: dict[tuple[str, str], object] = {}
    problems: list[SettingsProblem] = []
    defaults = set(parser.defaults())

    def at(section: str, key: str = "") -> int | None:
        line = lines.get((section, key))
        if line is None and key in defaults:
            line = lines.get(("DEFAULT", key))
        return line

    def problem(detail: str, hint: str, section: str, key: str | None, line: int | None,
                spilled: bool = False) -> None:
        problems.append(SettingsProblem(detail, hint, section, key, line, where, spilled))

    for section in parser.sections():
        schema = schemas.get(section)
        if schema is None:
            problem(f"section [{section}] is not one {whose} knows "
                    f"({', '.join(schemas)}; names are case-sensitive)",
                    "rename or remove the section: the agent refuses to start with it",
                    section, None, at(section))
            continue
        for key in parser[section]:
            line = at(section, key)
            spilled = key in defaults and (section, key) not in lines
            if key not in schema:
                if spilled:
                    message = (f"[DEFAULT] key `{key}` applies to every section, and "
                               f"[{section}] has no setting `{key}`")
                    hint = f"move `{key}` into the section it belongs to"
                else:
                    message = f"[{section}] has no setting `{key}`" + (
                        f" in {release.name}" if release is not None else "")
                    hint = f"fix the key's spelling or remove it ([{section}] takes " \
                           f"{', '.join(schema)})"
                problem(message, hint + ": the agent refuses to start", section, key, line,
                        spilled)
                continue
            try:
                text = parser.get(section, key)
            except configparser.InterpolationError as exc:
                problem(f"[{section}] {key}: `$` starts an interpolation the agent cannot "
                        f"resolve ({type(exc).__name__})",
                        "write `$$` for a literal `$` (the agent reads agent.ini with extended "
                        "interpolation)", section, key, line)
                continue
            try:
                value = _convert(schema[key], text)
            except ValueError:
                problem(f"[{section}] {key} is not a valid {schema[key]}",
                        "fix the value: the agent refuses to start with it", section, key, line)
                continue
            choices = choices_of.get((section, key))
            items = value if isinstance(value, list) else [value]
            if choices and any(item not in choices for item in items):
                problem(f"[{section}] {key} is not one of {', '.join(choices)}",
                        f"set {key} to one of {', '.join(choices)} (no inline comments)",
                        section, key, line)
                continue
            values[(section, key)] = value
    if ("service", "cluster") not in values and not any(
        p.section == "service" and p.key == "cluster" for p in problems
    ):
        problem("[service] cluster is not set",
                "add `[service]` with `cluster = <name>` (the name Slurm-web shows)",
                "service", "cluster", None)
    problems.sort(key=lambda p: p.line if p.line is not None else 1 << 30)
    return values, problems


def agent_ini_problems(text: str, *, path: str | None = None,
                       release: AgentRelease | None = None) -> list[SettingsProblem]:
    """Every reason the agent (of `release`) would refuse to start with this agent.ini."""
    where = _where(path)
    try:
        parser = _read(text, where)
    except ConfigError as exc:
        # Already located: keep configparser's own wording, less the file name.
        detail = exc.message.split(": ", 1)[1] if exc.message.startswith(where) else exc.message
        if detail.startswith("line "):
            detail = detail.split(": ", 1)[1]
        return [SettingsProblem(detail, exc.hint, line=exc.line, where=where)]
    return _settings_values(parser, where, option_lines(text), release)[1]


def parse_agent_ini(text: str, *, path: str | None = None,
                    release: AgentRelease | None = None) -> AgentSettings:
    """Settings from the text of agent.ini, read as the agent of `release` reads it;
    ConfigError naming the line or key when wrong."""
    where = _where(path)
    parser = _read(text, where)
    values, problems = _settings_values(parser, where, option_lines(text), release)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(first.message + more, first.hint, path, first.line)

    def get(key: str, default: object) -> object:
        return values.get(("slurmrestd", key), default)

    uri = get("uri", None)
    if uri is None and get("socket", None):
        uri = "unix://" + str(get("socket", "")).strip()  # the deprecated key, as the agent does
    uri = str(uri or DEFAULT_URI).strip()
    if not urlsplit(uri).scheme:
        raise ConfigError(f"{where}: [slurmrestd] uri has no scheme",
                          "use e.g. unix:///run/slurmrestd/slurmrestd.socket", path)
    lifespan = get("jwt_lifespan", DEFAULT_JWT_LIFESPAN)
    assert isinstance(lifespan, int)
    if lifespan <= 0:
        # The agent starts, but every token it signs is already expired.
        raise ConfigError(
            f"{where}: [slurmrestd] jwt_lifespan is not a positive integer",
            "give the token lifespan in seconds, e.g. jwt_lifespan = 3600", path,
        )
    versions = get("versions", None)
    version = get("version", None)
    token = get("jwt_token", None)
    return AgentSettings(
        cluster=str(values[("service", "cluster")]).strip(), uri=uri,
        auth=str(get("auth", DEFAULT_AUTH)), jwt_mode=str(get("jwt_mode", DEFAULT_JWT_MODE)),
        jwt_user=str(get("jwt_user", DEFAULT_JWT_USER)), jwt_lifespan=lifespan,
        jwt_key=Path(str(get("jwt_key", DEFAULT_JWT_KEY))),
        versions=tuple(str(v) for v in versions) if isinstance(versions, list) else None,
        version=str(version).strip() or None if version is not None else None,
        jwt_token=SecretBytes(str(token).encode()) if token else None, release=release,
    )


def load_agent_settings(path: str | Path = DEFAULT_AGENT_INI,
                        release: AgentRelease | None = None) -> AgentSettings:
    """Read and parse agent.ini; a missing or unreadable file is a ConfigError too."""
    path_text = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path_text} does not exist",
                          "install Slurm-web's agent or pass --agent-ini", path_text) from None
    except PermissionError:
        raise ConfigError(f"{path_text} is not readable by this user",
                          "run as root or as the agent's user (slurm-web)", path_text) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path_text} is not UTF-8 text", "fix the file's encoding",
                          path_text) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path_text}: {exc.strerror or type(exc).__name__}",
                          "check the path", path_text) from None
    return parse_agent_ini(text, path=path_text, release=release)


def load_installed_agent_settings(path: str | Path = DEFAULT_AGENT_INI,
                                  declared_release: str | None = None,
                                  definitions_path: str | None = None) -> AgentSettings:
    """agent.ini read for the Slurm-web release installed on this host (slurmweb.detect;
    `declared_release` only where nothing on the host names it); ConfigError when the release
    cannot be known or the file is wrong for it."""
    from watchdog_daemon.config import slurmweb

    try:
        release = slurmweb.detect(declared_release,
                                  definitions_path=definitions_path or slurmweb.VENDOR_DEFINITIONS)
    except slurmweb.ReleaseError as exc:
        raise ConfigError(exc.message, exc.hint) from None
    return load_agent_settings(path, release)


__all__ = [
    "AGENT_DEFAULT_VERSIONS",
    "AGENT_SCHEMA",
    "DEFAULT_AGENT_INI",
    "AgentSettings",
    "ConfigError",
    "SettingsProblem",
    "agent_ini_problems",
    "load_agent_settings",
    "load_installed_agent_settings",
    "option_lines",
    "parse_agent_ini",
]
