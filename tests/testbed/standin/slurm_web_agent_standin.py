#!/usr/bin/python3
"""STAND-IN for the Slurm-web agent, 5.2 or 6.0 (testbed only; NOT Slurm-web).

Slurm-web cannot be installed on the testbed hosts, so this small stdlib-only service (Python 3.9
and later) stands in for its agent, as far as slurmrestd access goes. It follows the real agent
of the release it runs as (`STANDIN_RELEASE`: "5.2" or "6.0", the default; Slurm-web 5.2.0 and
6.0.0 `slurmweb/apps/agent.py`, `slurmweb/apps/connect.py`, `slurmweb/slurmrestd/`,
`conf/vendor/agent.yml`, and RFL's settings loader), so that every test that trusts it would also
hold with the real agent. Its settings tables are held against Slurm-web's
(tests/unit/test_agent_definitions.py) and its loader's verdict against Slurm-web's own loader,
RFL.settings (tests/slurmweb_loader.py, on every agent.ini of tests/unit/test_agentini.py). On
a testbed host it comes in a `slurm-web-agent` package of that release
(tests/testbed/slurmweb_pkg.py), with the release's `agent.yml` and connect-check.

Start-up (exit 1 with a CRITICAL line on stderr, as the agent does, for each of these):
- agent.ini read by configparser with extended interpolation (`$` is special, `%` is not); a
  missing or unreadable file counts as empty; a parse error, an unknown section, an unknown key
  for THAT release (5.2 has no `[slurmrestd] versions`, `[filters] associations`, `[cache]
  associations`; a `[DEFAULT]` key spills into every section, so it is one too), a bad `$`, a
  value of the wrong type or outside its choices, or no `[service] cluster`;
- a deprecated key whose replacement is set is ignored, as RFL does (`socket` when `uri` is
  set; in 6.0 `version` when `versions` is set); `socket` alone makes the uri, as the agent does;
- the agent's own `[jwt] key` missing, empty or unreadable;
- `auth = local` with a non-unix uri; static mode without a token, or with an expired one;
- auto mode: the key copy `[slurmrestd] jwt_key` missing (or its directory), unreadable or empty.
  It is read ONCE here: a rotated key is seen only after a restart of the unit.

Requests (slurmrestd is asked lazily, at the first request that needs it, as the agent does):
- Its API version: 5.2 asks every call at `/slurm/v{[slurmrestd] version}/...` (default 0.0.41),
  no discovery: a Slurm that does not serve that version answers 404, and so does the agent
  (`URL not found on slurmrestd: ...`). 6.0 discovers it: `GET /slurm/v{ver}/ping` for each of
  `[slurmrestd] versions` (one per line, default 0.0.44, 0.0.43, 0.0.42, 0.0.41) with the
  agent's headers; a 401 stops it, an answer that is not `application/json`, not JSON, has
  `errors`, or lacks `meta.slurm.release` and `meta.slurm.cluster` moves to the next version.
  The version found is kept for the process.
- Tokens in auto mode: HS256 over the whole key file, claims iat, exp = iat + jwt_lifespan,
  sun = jwt_user; renewed when less than 60 s remain.
- `GET /v6.0.0/ping` (6.0 only; 5.2 has no such route and answers Flask's 404):
  `{"versions": {"api": ..., "slurm": ...}}`.
- `GET /v{release}/jobs`: slurmrestd's `/slurm/v{api}/jobs`; 200 with the job list, or the
  agent's error answer: 500 `slurmrestd error: <description> (<source>) [<error>/<number>]`
  (e.g. once Slurm has moved to a key other than the one loaded at start), 401, 404, or 500
  `Unable to connect to slurmrestd: ...`.
  Unlike the real agent, it asks for no gateway (Bearer) token: that is Slurm-web's own
  front-end authentication, not slurmrestd access.
- `GET /v{release}/accounts`: slurmrestd's `/slurmdb/v{api}/accounts` (slurmdbd), the same
  request and the same error answers as `/jobs` (`Slurmrestd.accounts` in both releases); 200
  with the account list.
- `GET /standin/status` (stand-in only): the release it runs as, what it loaded at start (unit,
  uri, auth, the key copy's SHA-256), the API version it uses, and whether slurm.conf sends
  accounting to slurmdbd. It asks slurmrestd nothing but the ping of that version: whether
  Slurm accepts the agent is read on the agent's own paths, `/jobs` (slurmctld) and `/accounts`
  (slurmdbd), by whoever grades it.

`connect-check` (first argument): Slurm-web's connect check of that release, with the same
settings and start-up errors (but not the `[jwt] key`, which it does not read). 5.2 pings its
version and prints `✅ connection successful (slurm: S, cluster: C)`; 6.0 discovers and prints
`✅ connection successful! (cluster: C, slurm: S, api: A)`; exit 0. A failure logs an ERROR line
on stderr, prints `❌ connection failure` and exits 1.

It listens where the agent does: `[service] interface` and `port` (localhost:5012). The key
bytes are never logged nor returned: only their SHA-256.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

AGENT_INI = os.environ.get("STANDIN_AGENT_INI", "/etc/slurm-web/agent.ini")
SLURM_CONF = os.environ.get("STANDIN_SLURM_CONF", "/etc/slurm/slurm.conf")
PORT_OVERRIDE = os.environ.get("STANDIN_PORT")  # unit tests only
RELEASE_ENV = "STANDIN_RELEASE"
DEFAULT_RELEASE = "6.0"
TIMEOUT = 10.0  # the real agent has none; a hung test must not hang forever
RENEW_BEFORE = 60  # seconds before exp when the agent signs a new token
# requests' URL for a unix-socket slurmrestd (`Slurmrestd.prefix`): the agent's error texts
# name it.
UNIX_PREFIX = "http+unix://slurmrestd"


class Release:
    """What differs between the Slurm-web releases the stand-in can be."""

    def __init__(self, name: str, version: str, discovery: bool, auth_500: bool) -> None:
        self.name = name  # as the testbed names it ("5.2")
        self.version = version  # Slurm-web's own, in its paths (/v5.2.0/...)
        # 6.0: `versions` tried in turn, and a /ping route; 5.2: one `version`, no /ping.
        self.discovery = discovery
        # 6.0 reads slurmrestd 25.11's 500 "Authentication does not apply to request" as a
        # 401 (its `_validate_status` FIXME); 5.2 reads 401 only.
        self.auth_500 = auth_500

    @property
    def prefix(self) -> str:
        return f"/v{self.version}"


RELEASES: dict[str, Release] = {
    "5.2": Release("5.2", "5.2.0", discovery=False, auth_500=False),
    "6.0": Release("6.0", "6.0.0", discovery=True, auth_500=True),
}

# Slurm-web 6.0 conf/vendor/agent.yml: section -> key -> (type, default); the defaults of the
# sections the stand-in acts on (service, slurmrestd, jwt), None elsewhere. Held against that
# file's table by tests/unit/test_agent_definitions.py, as is 5.2's below.
SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "service": {"cluster": ("str", None), "interface": ("str", "localhost"),
                "port": ("int", 5012), "cors": ("bool", False), "debug": ("bool", False),
                "log_flags": ("list", ["ALL"]), "debug_flags": ("list", ["slurmweb"])},
    "slurmrestd": {"uri": ("uri", "unix:///run/slurmrestd/slurmrestd.socket"),
                   "socket": ("path", None), "auth": ("str", "jwt"),
                   "jwt_mode": ("str", "auto"), "jwt_user": ("str", "slurm"),
                   "jwt_lifespan": ("int", 3600),
                   "jwt_key": ("path", "/var/lib/slurm-web/slurmrestd.key"),
                   "jwt_token": ("password", None), "version": ("str", None),
                   "versions": ("list", ["0.0.44", "0.0.43", "0.0.42", "0.0.41"])},
    "filters": {k: ("list", None) for k in (
        "jobs", "acctjob", "ctldjob", "nodes", "node", "partitions", "qos", "reservations",
        "accounts", "associations")},
    "policy": {"definition": ("path", None), "vendor_roles": ("path", None),
               "roles": ("path", None)},
    "jwt": {"key": ("path", "/var/lib/slurm-web/jwt.key"), "algorithm": ("str", "HS256"),
            "audience": ("str", "slurm-web")},
    "racksdb": {"enabled": ("bool", True), "db": ("path", None), "schema": ("path", None),
                "extensions": ("path", None), "drawings_schema": ("path", None),
                "infrastructure": ("str", None), "tags": ("list", None)},
    "cache": {"enabled": ("bool", False), "host": ("str", None), "port": ("int", None),
              "password": ("password", None),
              **{k: ("int", None) for k in (
                  "version", "jobs", "job", "nodes", "node", "partitions", "qos",
                  "reservations", "accounts", "associations")}},
    "metrics": {"enabled": ("bool", False), "restrict": ("list", None), "host": ("uri", None),
                "job": ("str", None)},
}
# 5.2 is 6.0 without what 6.0 added (API discovery, associations), and with the one API
# version it speaks as a plain setting.
_ADDED_IN_60 = {("slurmrestd", "versions"), ("filters", "associations"),
                ("cache", "associations")}
SCHEMAS: dict[str, dict[str, dict[str, tuple[str, Any]]]] = {
    "6.0": SCHEMA,
    "5.2": {section: {key: (("str", "0.0.41") if (section, key) == ("slurmrestd", "version")
                            else spec)
                      for key, spec in keys.items() if (section, key) not in _ADDED_IN_60}
            for section, keys in SCHEMA.items()},
}
# Deprecated key -> its replacement: RFL ignores the deprecated one when both are set.
DEPRECATED: dict[str, dict[tuple[str, str], tuple[str, str]]] = {
    "5.2": {("slurmrestd", "socket"): ("slurmrestd", "uri")},
    "6.0": {("slurmrestd", "socket"): ("slurmrestd", "uri"),
            ("slurmrestd", "version"): ("slurmrestd", "versions")},
}
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("slurmrestd", "auth"): ("local", "jwt"),
    ("slurmrestd", "jwt_mode"): ("auto", "static"),
    ("service", "log_flags"): ("slurmweb", "rfl", "werkzeug", "urllib3", "racksdb", "ALL"),
    ("service", "debug_flags"): ("slurmweb", "rfl", "werkzeug", "urllib3", "racksdb", "ALL"),
    ("jwt", "algorithm"): ("HS256", "HS384", "HS512", "ES256", "ES256K", "ES384", "ES512",
                          "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"),
}
BOOLS = {"1": True, "yes": True, "true": True, "on": True,
         "0": False, "no": False, "false": False, "off": False}


class StartupError(Exception):
    """The agent logs this as CRITICAL and exits 1."""


def release_of(name: str | None = None) -> Release:
    """The release to run as: `name`, else $STANDIN_RELEASE, else 6.0."""
    name = name or os.environ.get(RELEASE_ENV) or DEFAULT_RELEASE
    try:
        return RELEASES[name]
    except KeyError:
        raise StartupError(f"STAND-IN: unknown Slurm-web release {name!r} "
                           f"(known: {', '.join(RELEASES)})") from None


# ---------------------------------------------------------------------------------------------
# Settings, as RFL's loader reads agent.ini over the vendor definitions


def _convert(section: str, key: str, kind: str, text: str) -> Any:
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise StartupError(f"Invalid integer value '{text}' for [{section}]>{key} in site "
                               "overrides") from None
    if kind == "bool":
        if text.lower() not in BOOLS:
            raise StartupError(f"Invalid boolean value for [{section}]>{key} in site overrides")
        return BOOLS[text.lower()]
    if kind == "list":
        return text.strip().split("\n")
    return text


def load_settings(path: str, release: str | None = None) -> dict[str, dict[str, Any]]:
    """The agent's settings as `release` reads them; StartupError where it would not start."""
    name = release_of(release).name
    schema, deprecated = SCHEMAS[name], DEPRECATED[name]
    parser = configparser.ConfigParser(interpolation=configparser.ExtendedInterpolation())
    try:
        parser.read(path, encoding="utf-8")  # a missing or unreadable file is skipped
    except configparser.Error as exc:
        raise StartupError(f"Error while loading site settings {path}: "
                           f"{type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise StartupError(f"{path} is not UTF-8 (UnicodeDecodeError)") from None
    settings = {section: {key: default for key, (_kind, default) in keys.items()}
                for section, keys in schema.items()}
    for section in parser.sections():
        if section not in schema:
            raise StartupError(f"Section {section} loaded in settings overrides is not defined "
                               "in settings definition")
        for key in parser[section]:
            if key not in schema[section]:
                raise StartupError(f"Parameter {key} loaded in settings overrides is not "
                                   f"defined in section {section} of settings definition")
            try:
                text = parser.get(section, key)
            except configparser.InterpolationError as exc:
                # Not caught by the agent: a traceback, then exit 1.
                raise StartupError(f"{type(exc).__name__} in [{section}]>{key}") from None
            replacement = deprecated.get((section, key))
            if replacement and parser.has_option(*replacement):
                # RFL warns and skips it once read (a bad `$` there still stops the agent),
                # before converting it (a bad type there does not).
                continue
            value = _convert(section, key, schema[section][key][0], text)
            choices = CHOICES.get((section, key))
            for item in value if isinstance(value, list) else [value]:
                if choices and item not in choices:
                    raise StartupError(f"Value {item} for parameter [{section}]>{key} in site "
                                       f"overrides is not one of possible choices "
                                       f"{list(choices)}")
            settings[section][key] = value
    if settings["service"]["cluster"] is None:
        raise StartupError("Parameter [service]>cluster is missing but required in settings "
                           "overrides")
    rest = settings["slurmrestd"]
    if rest["socket"]:
        # Left set by RFL only when `uri` is not: the agent (and its connect check) then
        # builds the uri from it, in both releases.
        rest["uri"] = f"unix://{rest['socket']}"
    return settings


def read_key_file(path: str, what: str) -> bytes:
    """A key file as the agent reads one; StartupError naming the problem."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StartupError(f"{what}: Token private key parent directory {directory} not found")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise StartupError(f"{what}: Token private key file {path} not found") from None
    except PermissionError:
        raise StartupError(f"{what}: Permission error to access private key file "
                           f"{path}") from None
    except OSError as exc:
        raise StartupError(f"{what}: {type(exc).__name__} on {path}") from None
    if not data:
        raise StartupError(f"{what}: Key loaded from file {path} is empty")
    return data


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_token(key: bytes, user: str, lifespan: int, now: int | None = None) -> str:
    iat = int(time.time()) if now is None else now
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"iat": iat, "exp": iat + lifespan, "sun": user}
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


class Auth:
    """How the agent authenticates to slurmrestd (`slurmweb/slurmrestd/auth.py`)."""

    def __init__(self, settings: dict[str, dict[str, Any]]) -> None:
        rest = settings["slurmrestd"]
        self.method = rest["auth"]
        self.mode = rest["jwt_mode"]
        self.user = rest["jwt_user"]
        self.lifespan = int(rest["jwt_lifespan"])
        self.key_path = str(rest["jwt_key"])
        self._key: bytes | None = None
        self._token: str | None = None
        self._exp = 0
        self._lock = threading.Lock()
        if self.method == "local":
            if not str(rest["uri"]).startswith("unix:"):
                raise StartupError("Configuration error: slurmrestd local authentication is "
                                   "only supported with unix socket URI")
            return
        if self.mode == "static":
            token = rest["jwt_token"]
            if not token:
                raise StartupError("Configuration error: Missing token in configuration for "
                                   "slurmrestd jwt authentication in static mode")
            try:
                claims = json.loads(_b64decode(token.split(".")[1]))
                self._exp = int(claims["exp"])
            except (IndexError, KeyError, TypeError, ValueError):
                raise StartupError("Configuration error: Invalid slurmrestd JWT: Unable to "
                                   "decode token") from None
            if self._exp <= time.time():
                raise StartupError("Configuration error: Invalid slurmrestd JWT: Token is "
                                   "expired")
            self._token = token
            return
        self._key = read_key_file(
            self.key_path,
            "Configuration error: Unable to load JWT key for slurmrestd authentication")

    @property
    def key_sha256(self) -> str | None:
        return hashlib.sha256(self._key).hexdigest() if self._key is not None else None

    def headers(self) -> dict[str, str]:
        if self.method == "local":
            return {}
        with self._lock:
            if self._key is not None and (self._token is None
                                          or self._exp - time.time() < RENEW_BEFORE):
                now = int(time.time())
                self._token = sign_token(self._key, self.user, self.lifespan, now)
                self._exp = now + self.lifespan
            assert self._token is not None
            return {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self._token}


# ---------------------------------------------------------------------------------------------
# slurmrestd over its unix socket


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        super().__init__("slurmrestd", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AgentError(Exception):
    """An error answer of the agent: HTTP code and description."""

    def __init__(self, code: int, name: str, description: str) -> None:
        super().__init__(description)
        self.code, self.name, self.description = code, name, description


def rest_get(uri: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    if not uri.startswith("unix://"):
        raise AgentError(500, "Internal Server Error",
                         f"Unable to connect to slurmrestd: stand-in supports unix:// uris only "
                         f"({uri})")
    conn = UnixHTTPConnection(uri[len("unix://"):])
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise AgentError(500, "Internal Server Error",
                         f"Unable to connect to slurmrestd: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


def _auth_refused(status: int, body: bytes, release: Release) -> bool:
    return status == 401 or (release.auth_500 and status == 500 and body.strip()
                             == b"Authentication does not apply to request")


def slurmrestd_error(errors: list[Any]) -> str:
    """The agent's text for the first of slurmrestd's `errors[]`."""
    first = errors[0] if isinstance(errors[0], dict) else {}
    text = f"slurmrestd error: {first.get('description', '')} ({first.get('source', '')})"
    if first.get("error_number") is not None:
        text += f" [{first.get('error') or 'slurmrestd undefined error'}/" \
                f"{first['error_number']}]"
    return text


class Agent:
    def __init__(self, unit: str, settings: dict[str, dict[str, Any]], auth: Auth,
                 release: str | None = None) -> None:
        self.unit = unit
        self.slurmweb = release_of(release)
        self.settings = settings
        self.auth = auth
        self.started_at = time.time()
        self.uri = str(settings["slurmrestd"]["uri"])
        rest = settings["slurmrestd"]
        self.versions = ([str(v) for v in rest["versions"]] if self.slurmweb.discovery
                         else [str(rest["version"])])
        self.api: str | None = None
        self.release: str | None = None
        self.cluster: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def start(cls, unit: str, ini: str | None = None, release: str | None = None) -> Agent:
        """Everything the agent does before serving; StartupError where it exits 1."""
        settings = load_settings(ini or AGENT_INI, release)
        read_key_file(str(settings["jwt"]["key"]), f"Error while loading JWT private key "
                      f"{settings['jwt']['key']}")
        return cls(unit, settings, Auth(settings), release)

    @property
    def prefix(self) -> str:
        return self.slurmweb.prefix

    # -- slurmrestd ----------------------------------------------------------------------------

    def discover(self) -> str:
        """The API version to use: 5.2's one setting, or 6.0's found once (a failure is not
        kept: the next request retries)."""
        if not self.slurmweb.discovery:
            return self.versions[0]
        with self._lock:
            if self.api is not None:
                return self.api
            for version in self.versions:
                query = f"/slurm/v{version}/ping"
                status, ctype, body = rest_get(self.uri, query, self.auth.headers())
                if _auth_refused(status, body, self.slurmweb):
                    raise AgentError(401, "Unauthorized", "Authentication error on slurmrestd: "
                                     f"{self._url(query)}")
                if ctype != "application/json":
                    continue
                try:
                    data = json.loads(body)
                    meta = data["meta"]["slurm"]
                    release, cluster = meta["release"], meta["cluster"]
                except (ValueError, KeyError, TypeError):
                    continue
                if data.get("errors"):
                    continue
                self.api, self.release, self.cluster = version, release, cluster
                return version
        raise AgentError(500, "Internal Server Error", "Unable to connect to slurmrestd: Unable "
                         "to discover slurmrestd API version. Tried versions: "
                         + ", ".join(self.versions))

    def _url(self, query: str) -> str:
        # What requests calls `response.url`, which the agent's error texts carry.
        return (UNIX_PREFIX if self.uri.startswith("unix:") else self.uri.rstrip("/")) + query

    def request(self, path: str, component: str = "slurm") -> Any:
        """`/{component}/v{api}/{path}` as the agent asks it; AgentError as it would answer."""
        query = f"/{component}/v{self.discover()}/{path}"
        status, ctype, body = rest_get(self.uri, query, self.auth.headers())
        if _auth_refused(status, body, self.slurmweb):
            raise AgentError(401, "Unauthorized",
                             f"Authentication error on slurmrestd: {self._url(query)}")
        if status == 404:
            raise AgentError(404, "Not Found", f"URL not found on slurmrestd: {self._url(query)}")
        if ctype != "application/json":
            raise AgentError(500, "Internal Server Error", "Invalid response from slurmrestd: "
                             "Unsupported Content-Type for slurmrestd response "
                             f"{self._url(query)}: {ctype}")
        try:
            data = json.loads(body)
        except ValueError:
            raise AgentError(500, "Internal Server Error", "Invalid response from slurmrestd: "
                             "not JSON") from None
        if not isinstance(data, dict) or "errors" not in data:
            raise AgentError(500, "Internal Server Error", "Invalid response from slurmrestd")
        if data["errors"]:
            raise AgentError(500, "Internal Server Error", slurmrestd_error(data["errors"]))
        return data

    def slurm_meta(self) -> tuple[str, str, str]:
        """(cluster, Slurm release, API version) as the release's connect check reads them:
        6.0 from its discovery, 5.2 from the ping of its one version (its `version()`)."""
        if self.slurmweb.discovery:
            api = self.discover()
            return str(self.cluster), str(self.release), api
        try:
            meta = self.request("ping")["meta"]["slurm"]
            return str(meta["cluster"]), str(meta["release"]), self.versions[0]
        except (KeyError, TypeError):
            raise AgentError(500, "Internal Server Error", "Invalid response from slurmrestd: "
                             "no meta.slurm in its ping") from None

    # -- stand-in status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Facts about what this process loaded; no verdict on Slurm accepting it."""
        result: dict[str, Any] = {
            "standin": True, "unit": self.unit, "started_at": self.started_at,
            "slurmweb": self.slurmweb.name, "slurmweb_version": self.slurmweb.version,
            "key_path": self.auth.key_path, "key_state": "ok" if self.auth.key_sha256 else None,
            "key_sha256": self.auth.key_sha256, "uri": self.uri, "jwt_user": self.auth.user,
            "auth": self.auth.method, "jwt_mode": self.auth.mode, "slurm": None,
            "cluster": self.settings["service"]["cluster"], "api": None,
            "accounting": uses_slurmdbd(),
            # 6.0: why discovery failed; 5.2: why the ping of its one version failed.
            "discovery_error": None,
        }
        if not self.slurmweb.discovery:
            result["api"] = self.versions[0]  # used whatever Slurm serves
        try:
            cluster, result["slurm"], result["api"] = self.slurm_meta()
            result["cluster"] = cluster or result["cluster"]
        except AgentError as exc:
            result["discovery_error"] = exc.description
        return result


def uses_slurmdbd(path: str | None = None) -> bool:
    path = path or SLURM_CONF
    if path == "/etc/slurm/slurm.conf" and not os.path.exists(path):
        # A configless host: Slurm reads the copy sackd or slurmd keep, so the tests do too.
        path = "/run/slurm/conf/slurm.conf"
    try:
        with open(path) as fh:
            for line in fh:
                name, _, value = line.split("#", 1)[0].partition("=")
                if name.strip().lower() == "accountingstoragetype":
                    return "slurmdbd" in value
    except OSError:
        pass
    return False


# The agent's answer for a path it has no route for (Flask's NotFound, through Slurm-web's error
# handler).
FLASK_NOT_FOUND = {"code": 404, "name": "Not Found",
                   "description": "The requested URL was not found on the server. If you "
                                  "entered the URL manually please check your spelling and try "
                                  "again."}


def make_handler(agent: Agent) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/standin/status":
                self._send(200, agent.status())
                return
            try:
                if path == f"{agent.prefix}/ping" and not agent.slurmweb.discovery:
                    self._send(404, FLASK_NOT_FOUND)  # 5.x has no /ping route
                elif path == f"{agent.prefix}/ping":
                    agent.discover()
                    self._send(200, {"versions": {"api": agent.api, "slurm": agent.release}})
                elif path == f"{agent.prefix}/jobs":
                    self._send(200, agent.request("jobs").get("jobs", []))
                elif path == f"{agent.prefix}/accounts":
                    self._send(200, agent.request("accounts", "slurmdb").get("accounts", []))
                else:
                    self._send(404, {"code": 404, "name": "Not Found",
                                     "description": "not served by the stand-in"})
            except AgentError as exc:
                self._send(exc.code, {"code": exc.code, "name": exc.name,
                                      "description": exc.description})

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"standin: {self.address_string()} {format % args}\n")

    return Handler


def critical(message: str) -> int:
    print(f"MainThread: [CRITICAL] {message}", file=sys.stderr, flush=True)
    return 1


def connect_check(ini: str | None = None, release: str | None = None) -> int:
    """Slurm-web's connect check of that release (`slurmweb/apps/connect.py`): its exit code."""
    try:
        slurmweb = release_of(release)
        settings = load_settings(ini or AGENT_INI, slurmweb.name)
        agent = Agent("connect-check", settings, Auth(settings), slurmweb.name)
    except StartupError as exc:
        return critical(str(exc))
    try:
        cluster, slurm, api = agent.slurm_meta()
    except AgentError as exc:
        print(f"MainThread: [ERROR] {exc.description}", file=sys.stderr, flush=True)
        print("❌ connection failure", flush=True)
        return 1
    if slurmweb.discovery:
        print(f"✅ connection successful! (cluster: {cluster}, slurm: {slurm}, api: {api})")
    else:
        print(f"✅ connection successful (slurm: {slurm}, cluster: {cluster})")
    return 0


def serve(unit: str, ini: str | None = None) -> int:
    try:
        agent = Agent.start(unit, ini)
    except StartupError as exc:
        return critical(str(exc))
    service = agent.settings["service"]
    port = int(PORT_OVERRIDE or service["port"])
    print(f"standin: STAND-IN for Slurm-web {agent.slurmweb.version} agent as {unit}: "
          f"cluster={service['cluster']} uri={agent.uri} key={agent.auth.key_path} "
          f"sha256={agent.auth.key_sha256} listening on {service['interface']}:{port}",
          file=sys.stderr, flush=True)
    server = ThreadingHTTPServer((service["interface"], port), make_handler(agent))
    server.daemon_threads = True
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


USAGE = "usage: slurm_web_agent_standin.py [agent | connect-check] [--conf AGENT_INI]"


def main(argv: list[str] | None = None) -> int:
    """`agent` (the default) or `connect-check`, as the release's own commands are called
    (5.x: slurm-web-agent, slurm-web-connect-check; 6.x: slurm-web agent|connect-check)."""
    args = list(argv or [])
    command = args.pop(0) if args and not args[0].startswith("-") else "agent"
    ini = None
    if args[:1] == ["--conf"] and len(args) == 2:
        ini = args[1]
    elif args or command not in ("agent", "connect-check"):
        print(USAGE, file=sys.stderr)
        return 2
    if command == "connect-check":
        return connect_check(ini)
    return serve(os.environ.get("UNIT", "slurm-web-agent-standin"), ini)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
