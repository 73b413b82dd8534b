"""`binderfed member`: an organization joins or leaves the federation through Consul.

    binderfed member register   --consul URL --name gesis --url https://notebooks.gesis.org/binder \\
                                [--weight 1] [--region eu-central] [--data-site zenodo.org ...] [--hub-url URL]
    binderfed member deregister --consul URL --name gesis
    binderfed member list       --consul URL

`register` puts a service (default name `binder-federation`) with the member's
metadata in the Consul agent at URL, with an HTTP check on `<url>/health` that
Consul runs itself; routers watching that service route to the member once the
check passes and their own probes find it healthy. `deregister` removes it: the
member leaves rotation at once (visitors already on it keep their servers).
Routers admit a registration only on a host their operators allow
(`consul.allowed_hosts`), and never as the prime member: that is named in the
operators' config file. See docs/joining.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import consul
import jsonschema

from .admission import host_rules
from .config import ConsulSettings, schema
from .secrets import SecretError, read_secret
from .sources.consul import consul_client, members_from_health

DEFAULT_SERVICE = ConsulSettings().service
DEFAULT_CONSUL = os.environ.get("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500")
TIMEOUT = 30.0

# `member list` cannot know each router's consul.allowed_hosts: it applies no host restriction.
ANY_HOST = host_rules(["*", "0.0.0.0/0", "::/0"])

# Which command-line flag each member field comes from, for error messages.
_FLAGS = {"name": "--name", "url": "--url", "weight": "--weight", "region": "--region", "data_sites": "--data-site",
          "hub_url": "--hub-url"}


class RegistrationError(ValueError):
    """A registration that cannot be right; the message names the flag."""


@dataclass(frozen=True)
class Registration:
    """One member's Consul service registration."""

    name: str
    url: str
    weight: float = 1.0
    region: str = ""
    data_sites: tuple[str, ...] = ()
    hub_url: str = ""
    service: str = DEFAULT_SERVICE
    tags: tuple[str, ...] = ()
    check: bool = True
    check_interval: str = "15s"
    check_timeout: str = "5s"
    deregister_after: str = ""
    extra_meta: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        data = {"name": self.name, "url": self.url, "weight": self.weight, "region": self.region,
                "data_sites": list(self.data_sites), "hub_url": self.hub_url}
        validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/member", "$defs": schema()["$defs"]})
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            key = str(error.absolute_path[0]) if error.absolute_path else ""
            described = error.schema.get("description") or error.message
            raise RegistrationError(f"{_FLAGS.get(key, key)}: {error.instance!r} is not valid ({described})")
        if any("," in site for site in self.data_sites):
            raise RegistrationError("--data-site: a data site cannot contain a comma (repeat the flag instead)")
        if len(",".join(self.data_sites)) > 512:
            raise RegistrationError("--data-site: all data sites together must fit in 512 characters (Consul's Meta limit)")

    def meta(self) -> dict[str, str]:
        """The service's Meta: what routers read (see federation.sources.consul)."""
        meta = {"url": self.url.rstrip("/"), "weight": f"{self.weight:g}"}
        if self.region:
            meta["region"] = self.region
        if self.data_sites:
            meta["data_sites"] = ",".join(self.data_sites)
        if self.hub_url:
            meta["hub_url"] = self.hub_url.rstrip("/")
        meta.update(self.extra_meta)
        return meta

    def payload(self) -> dict:
        """Arguments of py-consul's `agent.service.register`."""
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        tags = list(dict.fromkeys(["binderhub", *(["https"] if parts.scheme == "https" else []), *self.tags]))
        check = None
        if self.check:
            check = consul.Check.http(self.url.rstrip("/") + "/health", self.check_interval, timeout=self.check_timeout,
                                      deregister=self.deregister_after or None)
            check["name"] = f"BinderHub /health of {self.name}"
        return dict(name=self.service, service_id=self.name, address=parts.hostname, port=port, tags=tags,
                    meta=self.meta(), check=check)


async def register_member(consul_url: str, registration: Registration, token: str = "") -> None:
    """Register (or update) a member in the Consul agent at `consul_url`."""
    registration.validate()
    client = consul_client(consul_url, token, timeout=TIMEOUT)
    try:
        await client.agent.service.register(**registration.payload())
    finally:
        await client.close()


async def deregister_member(consul_url: str, name: str, token: str = "") -> bool:
    """Remove a member's registration; False if the agent did not know it."""
    client = consul_client(consul_url, token, timeout=TIMEOUT)
    try:
        # The agent answers 404 for an ID it does not hold; py-consul turns that into False.
        return bool(await client.agent.service.deregister(name))
    finally:
        await client.close()


async def list_members(consul_url: str, service: str = DEFAULT_SERVICE, token: str = ""):
    """What routers watching `service` would see: members and left-out entries (before each
    router's own `consul.allowed_hosts`, which this cannot know)."""
    client = consul_client(consul_url, token, timeout=TIMEOUT)
    try:
        _, entries = await client.health.service(service)
    finally:
        await client.close()
    return members_from_health(entries, allowed_hosts=ANY_HOST)


# -- command line --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--consul", default=DEFAULT_CONSUL, metavar="URL",
                        help="Consul HTTP API of your agent (default: $CONSUL_HTTP_ADDR or http://127.0.0.1:8500)")
    common.add_argument("--service", default=DEFAULT_SERVICE,
                        help=f"Consul service name the federation watches (default: {DEFAULT_SERVICE})")
    common.add_argument("--token-file", help="file holding the Consul ACL token (default: $CONSUL_HTTP_TOKEN)")
    common.add_argument("--token", help="Consul ACL token (visible in the process list: prefer --token-file)")

    reg = sub.add_parser("register", parents=[common], help="register (or update) your BinderHub as a member",
                         description="Register (or update) your BinderHub as a member of the federation.")
    reg.add_argument("--name", required=True, help="short unique member name (lowercase letters, digits, -)")
    reg.add_argument("--url", required=True, help="public base URL of your BinderHub")
    reg.add_argument("--weight", type=float, default=1.0, help="share of launches relative to others (default 1)")
    reg.add_argument("--region", default="", help="free-form region label")
    reg.add_argument("--data-site", action="append", default=[], dest="data_sites", metavar="SITE",
                     help="data site your cluster sits close to (zenodo.org, s3:eu-central-1, ...); repeatable")
    reg.add_argument("--hub-url", default="", help="your JupyterHub's public URL, if on another host than --url "
                                                   "and not a subdomain of it (hub.<host> needs nothing)")
    reg.add_argument("--tag", action="append", default=[], dest="tags", help="extra Consul tag; repeatable")
    reg.add_argument("--check-interval", default="15s", help="how often Consul checks <url>/health (default 15s)")
    reg.add_argument("--check-timeout", default="5s", help="timeout of that check (default 5s)")
    reg.add_argument("--deregister-after", default="",
                     help="let Consul remove the registration after its check was critical this long (e.g. 72h)")
    reg.add_argument("--no-check", action="store_true", help="register without the HTTP health check")

    dereg = sub.add_parser("deregister", parents=[common], help="leave the federation",
                           description="Remove your BinderHub's registration: it leaves rotation at once.")
    dereg.add_argument("--name", required=True, help="the member name you registered")

    sub.add_parser("list", parents=[common], help="show the members routers see in Consul",
                   description="Show the members routers watching the service see, and entries they leave out "
                               "(each router also admits only hosts in its consul.allowed_hosts).")


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return args.token
    return read_secret("CONSUL_HTTP_TOKEN", args.token_file or "").value


def run(args: argparse.Namespace) -> int:
    try:
        token = _token(args)
        if args.action == "register":
            registration = Registration(
                name=args.name, url=args.url, weight=args.weight, region=args.region,
                data_sites=tuple(args.data_sites), hub_url=args.hub_url, service=args.service, tags=tuple(args.tags),
                check=not args.no_check, check_interval=args.check_interval, check_timeout=args.check_timeout,
                deregister_after=args.deregister_after,
            )
            asyncio.run(register_member(args.consul, registration, token))
            print(f"registered {registration.name} ({registration.url.rstrip('/')}) as service "
                  f"{registration.service!r} in Consul at {args.consul}"
                  + ("; it joins rotation once its /health check passes" if registration.check else ""))
        elif args.action == "deregister":
            if asyncio.run(deregister_member(args.consul, args.name, token)):
                print(f"deregistered {args.name}: it has left rotation")
            else:
                print(f"error: no service with ID {args.name!r} is registered in the Consul agent at {args.consul} "
                      "(deregister through the agent you registered with)", file=sys.stderr)
                return 1
        else:
            view = asyncio.run(list_members(args.consul, args.service, token))
            for m in view.members:
                extras = [f"weight {m.weight:g}"] + ([f"region {m.region}"] if m.region else []) + \
                         ([f"data {','.join(m.data_sites)}"] if m.data_sites else [])
                print(f"{m.name}\t{m.url}\t{', '.join(extras)}")
            for p in (*view.left_out, *view.notes):
                print(f"{'left out' if p in view.left_out else 'note'}: {p.service_id} on {p.node}: {p.why}")
            if not view.members and not view.left_out:
                print(f"no members registered under service {args.service!r}")
    except (RegistrationError, SecretError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, RegistrationError) else 1
    except consul.ConsulException as exc:
        print(f"error: Consul at {args.consul} refused: {str(exc).strip()[:300]}", file=sys.stderr)
        return 1
    except (OSError, asyncio.TimeoutError) as exc:  # aiohttp's connection errors are OSErrors
        print(f"error: cannot reach Consul at {args.consul}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    return 0
