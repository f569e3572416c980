"""Read /etc/slurm-web/agent.ini the way the Slurm-web agent does (the settings the check needs).

The agent layers agent.ini over its vendor defaults; the defaults below are those of the vendor
file (`conf/vendor/agent.yml`) for the keys we use. Parsing is a pure function of the text so it
can be tested without files; `load_agent_settings` adds the file reading.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.secret import SecretBytes

DEFAULT_AGENT_INI = "/etc/slurm-web/agent.ini"
DEFAULT_URI = "unix:///run/slurmrestd/slurmrestd.socket"
DEFAULT_AUTH = "jwt"
DEFAULT_JWT_MODE = "auto"
DEFAULT_JWT_USER = "slurm"
DEFAULT_JWT_LIFESPAN = 3600
DEFAULT_JWT_KEY = "/var/lib/slurm-web/slurmrestd.key"
JWT_MODES = ("auto", "static")


class ConfigError(Exception):
    """agent.ini is missing, malformed or incomplete. Never carries setting values."""

    exit_code = ExitCode.CONFIG_INVALID

    def __init__(self, message: str, hint: str, path: str | None = None) -> None:
        self.message = message
        self.hint = hint
        self.path = path
        super().__init__(f"{message} — {hint}")


@dataclass(frozen=True)
class AgentSettings:
    cluster: str
    uri: str = DEFAULT_URI
    auth: str = DEFAULT_AUTH
    jwt_mode: str = DEFAULT_JWT_MODE
    jwt_user: str = DEFAULT_JWT_USER
    jwt_lifespan: int = DEFAULT_JWT_LIFESPAN
    jwt_key: Path = Path(DEFAULT_JWT_KEY)
    versions: tuple[str, ...] | None = None
    # Static-mode token: a secret too, kept wrapped.
    jwt_token: SecretBytes | None = None

    @property
    def socket_path(self) -> Path | None:
        """The unix socket path of a `unix://` URI, None for other schemes."""
        parts = urlsplit(self.uri)
        if parts.scheme != "unix":
            return None
        # unix:///run/x.socket -> netloc "" path "/run/x.socket"; tolerate unix:/run/x too.
        return Path(unquote(parts.netloc + parts.path))


def _where(path: str | None) -> str:
    return path or "agent.ini"


def parse_agent_ini(text: str, *, path: str | None = None) -> AgentSettings:
    """Settings from the text of agent.ini; ConfigError naming the line or key when wrong."""
    where = _where(path)
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        parser.read_string(text, source=where)
    except configparser.MissingSectionHeaderError as exc:
        # Error messages carry line numbers only: a line could be a static token.
        raise ConfigError(
            f"{where}: line {exc.lineno}: content before the first [section] header",
            "start the file with a section such as [service]", path,
        ) from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(
            f"{where}: line {exc.lineno}: section [{exc.section}] appears twice",
            "merge the two sections into one", path,
        ) from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(
            f"{where}: line {exc.lineno}: key {exc.option!r} appears twice in [{exc.section}]",
            "keep only one of them", path,
        ) from None
    except configparser.ParsingError as exc:
        lines = ", ".join(str(lineno) for lineno, _line in exc.errors)
        raise ConfigError(
            f"{where}: cannot parse line(s) {lines}",
            "each line must be `key = value`, a [section] header or a comment", path,
        ) from None
    except configparser.Error as exc:
        raise ConfigError(f"{where}: malformed ({type(exc).__name__})",
                          "check the file's INI syntax", path) from None

    cluster = parser.get("service", "cluster", fallback="").strip()
    if not cluster:
        raise ConfigError(
            f"{where}: [service] cluster is not set",
            "add `[service]` with `cluster = <name>` (the name Slurm-web shows)", path,
        )
    rest = parser["slurmrestd"] if parser.has_section("slurmrestd") else {}

    def get(key: str, default: str) -> str:
        value = rest.get(key)
        return default if value is None or not value.strip() else value.strip()

    if rest.get("uri") is None and rest.get("socket"):
        # Deprecated older key: a bare socket path.
        uri = "unix://" + rest["socket"].strip()
    else:
        uri = get("uri", DEFAULT_URI)
    if not urlsplit(uri).scheme:
        raise ConfigError(f"{where}: [slurmrestd] uri {uri!r} has no scheme",
                          "use e.g. unix:///run/slurmrestd/slurmrestd.socket", path)

    lifespan_text = get("jwt_lifespan", str(DEFAULT_JWT_LIFESPAN))
    try:
        lifespan = int(lifespan_text)
    except ValueError:
        lifespan = 0
    if lifespan <= 0:
        raise ConfigError(
            f"{where}: [slurmrestd] jwt_lifespan {lifespan_text!r} is not a positive integer",
            "give the token lifespan in seconds, e.g. jwt_lifespan = 3600", path,
        )

    jwt_mode = get("jwt_mode", DEFAULT_JWT_MODE)
    if jwt_mode not in JWT_MODES:
        raise ConfigError(f"{where}: [slurmrestd] jwt_mode {jwt_mode!r} is not auto or static",
                          "set jwt_mode = auto", path)

    versions_text = rest.get("versions")
    versions = None
    if versions_text is not None and versions_text.strip():
        versions = tuple(v.strip() for v in versions_text.split(",") if v.strip())

    token_text = rest.get("jwt_token")
    token = SecretBytes(token_text.strip().encode()) if token_text and token_text.strip() else None

    return AgentSettings(
        cluster=cluster, uri=uri, auth=get("auth", DEFAULT_AUTH), jwt_mode=jwt_mode,
        jwt_user=get("jwt_user", DEFAULT_JWT_USER), jwt_lifespan=lifespan,
        jwt_key=Path(get("jwt_key", DEFAULT_JWT_KEY)), versions=versions, jwt_token=token,
    )


def load_agent_settings(path: str | os.PathLike[str] = DEFAULT_AGENT_INI) -> AgentSettings:
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
    return parse_agent_ini(text, path=path_text)


__all__ = [
    "DEFAULT_AGENT_INI",
    "AgentSettings",
    "ConfigError",
    "load_agent_settings",
    "parse_agent_ini",
]
