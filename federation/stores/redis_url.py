"""Store URLs that name a Redis: parsed once, described without credentials for logs.

``redis://[[user]:password@]host[:port][/db]``
    A single Redis server (any URL `redis.asyncio.Redis.from_url` accepts).
``rediss://...``
    The same over TLS.
``redis+sentinel://[[user:]password@]host[:port][,host2[:port2]...]/service_name[/db]``
    Redis Sentinel. The hosts are sentinels (default port 26379); ``service_name`` is the
    monitored master's name, and the store always talks to the current master
    (`redis.asyncio.sentinel.Sentinel(...).master_for(service_name)`), following fail-overs.
    The password (and user) authenticate to the master. Query parameters:
    ``sentinel_password`` (sentinels that require their own password) and ``ssl=true``
    (TLS to the master). Example:
    ``redis+sentinel://s3cret@10.0.0.1:26379,10.0.0.2:26379/binderfed/0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_PORT = 26379


@dataclass(frozen=True)
class RedisTarget:
    """Where a store URL points."""

    kind: str                                   # "redis" | "rediss" | "sentinel"
    url: str = ""                               # for redis/rediss: the URL itself
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False

    def describe(self) -> str:
        """The URL without credentials, for logs."""
        if self.kind == "sentinel":
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"redis+sentinel://{hosts}/{self.service}/{self.db}"
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return f"{parts.scheme}://{netloc}{parts.path}"


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"empty host in {text!r}")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a store URL (see the module docstring); raises ValueError naming what is wrong."""
    if url.startswith(("redis://", "rediss://")):
        parts = urlsplit(url)
        if not parts.hostname and not parts.path.startswith("/"):
            raise ValueError(f"store URL {url!r}: expected redis://host[:port][/db]")
        db_text = parts.path.strip("/") or "0"
        if not db_text.isdigit():
            raise ValueError(f"store URL {url!r}: database must be a number, got {db_text!r}")
        return RedisTarget(kind="rediss" if parts.scheme == "rediss" else "redis", url=url, db=int(db_text),
                           username=unquote(parts.username) if parts.username else None,
                           password=unquote(parts.password) if parts.password else None,
                           ssl=parts.scheme == "rediss")
    if not url.startswith("redis+sentinel://"):
        raise ValueError(f"store URL {url!r}: expected redis://, rediss:// or redis+sentinel://")
    rest = url[len("redis+sentinel://"):]
    rest, _, query = rest.partition("?")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        userinfo, hostpart = "", rest
    username = password = None
    if userinfo:
        if ":" in userinfo:
            user, _, pw = userinfo.partition(":")
            username, password = (unquote(user) or None), unquote(pw)
        else:
            password = unquote(userinfo)
    hosts, _, path = hostpart.partition("/")
    segments = [s for s in path.split("/") if s]
    if not hosts:
        raise ValueError(f"store URL {url!r}: no sentinel host (redis+sentinel://host:port[,host:port]/service[/db])")
    if not segments:
        raise ValueError(f"store URL {url!r}: no service name (redis+sentinel://host:port[,host:port]/service[/db])")
    if len(segments) > 2:
        raise ValueError(f"store URL {url!r}: too many path segments, expected /service[/db]")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"store URL {url!r}: database must be a number, got {segments[1]!r}")
        db = int(segments[1])
    try:
        sentinels = tuple(_host_port(h, SENTINEL_PORT) for h in hosts.split(",") if h.strip())
    except ValueError as exc:
        raise ValueError(f"store URL {url!r}: {exc}") from None
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    return RedisTarget(kind="sentinel", sentinels=sentinels, service=unquote(segments[0]), db=db,
                       username=username, password=password,
                       sentinel_password=params.get("sentinel_password"),
                       ssl=params.get("ssl", "").lower() in ("1", "true", "yes"))
