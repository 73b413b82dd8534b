"""`binderfed admin`: the admin API of a running router, from a terminal.

    binderfed admin drain NAME [--note TEXT]
    binderfed admin undrain NAME
    binderfed admin weight NAME W          (W >= 0; "reset" goes back to the declared weight)
    binderfed admin clear NAME             (forget the member's override)
    binderfed admin overrides

Every action takes `--federation URL` (default http://127.0.0.1:8080 or
$BINDERFED_URL), the token from $BINDERFED_ADMIN_TOKEN or `--token-file`, and `--by`
(default $USER), the name that goes into the router's log and the override.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from typing import Any
from urllib.parse import quote

import aiohttp

from federation.secrets import SecretError, read_secret

TOKEN_ENV = "BINDERFED_ADMIN_TOKEN"
DEFAULT_URL = os.environ.get("BINDERFED_URL", "http://127.0.0.1:8080")
TIMEOUT = 30.0


class AdminError(Exception):
    """The router refused the request or could not be reached; the message says why."""


async def call(base_url: str, token: str, method: str, path: str, body: dict | None = None, by: str = "") -> dict[str, Any]:
    """One admin API request; the decoded JSON answer, or AdminError."""
    headers = {"Authorization": f"Bearer {token}"}
    if by:
        headers["X-Admin-User"] = by
    url = base_url.rstrip("/") + "/api/v1/admin" + path
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            async with session.request(method, url, json=body, headers=headers) as resp:
                text = await resp.text()
                try:
                    data = json.loads(text) if text else {}
                except ValueError:
                    data = {"error": text.strip()[:300]}
                if resp.status >= 400:
                    message = data.get("error") if isinstance(data, dict) else None
                    raise AdminError(f"{resp.status} {resp.reason}: {message or text.strip()[:300]}")
                return data
    except aiohttp.ClientError as exc:
        raise AdminError(f"cannot reach the router at {base_url}: {exc}") from exc
    except asyncio.TimeoutError as exc:
        raise AdminError(f"no answer from the router at {base_url} within {TIMEOUT:g} s") from exc


def _member_path(name: str, action: str) -> str:
    return f"/members/{quote(name, safe='')}/{action}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--federation", default=DEFAULT_URL, metavar="URL",
                        help="base URL of a router (default: $BINDERFED_URL or http://127.0.0.1:8080)")
    common.add_argument("--token-file", help=f"file holding the admin token (default: ${TOKEN_ENV})")
    common.add_argument("--by", default=os.environ.get("USER") or _user(), help="your name, for the audit log (default: $USER)")
    common.add_argument("--json", action="store_true", help="print the router's JSON answer")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("drain", parents=[common], help="take a member out of rotation (still probed)")
    p.add_argument("name")
    p.add_argument("--note", default="", help="why, shown in /api/v1/members and the log")
    p = sub.add_parser("undrain", parents=[common], help="put a drained member back in rotation")
    p.add_argument("name")
    p = sub.add_parser("weight", parents=[common], help="set a member's weight ('reset': back to the declared one)")
    p.add_argument("name")
    p.add_argument("weight", help="a number >= 0, or 'reset'")
    p = sub.add_parser("clear", parents=[common], help="forget a member's override (drain and weight)")
    p.add_argument("name")
    sub.add_parser("overrides", parents=[common], help="list every member override")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers): the router says "token holder"
        return ""


def _token(args: argparse.Namespace) -> str:
    secret = read_secret(TOKEN_ENV, args.token_file or "")
    if not secret:
        where = f"{args.token_file} is empty" if args.token_file else f"set {TOKEN_ENV} or use --token-file FILE"
        raise AdminError(f"no admin token: {where}")
    return secret.value


def _describe(data: dict[str, Any]) -> str:
    member = data.get("member")
    if member:
        return f"{member['name']}: {member['state']} (weight {member['weight']:g}) - {member['reason']}"
    override = data.get("override")
    return f"{data.get('name')}: override {'removed' if override is None else override}"


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    token = _token(args)
    base, by = args.federation, args.by
    if args.action == "drain":
        return await call(base, token, "POST", _member_path(args.name, "drain"), {"note": args.note}, by)
    if args.action == "undrain":
        return await call(base, token, "POST", _member_path(args.name, "undrain"), None, by)
    if args.action == "weight":
        if args.weight == "reset":
            weight: float | None = None
        else:
            try:
                weight = float(args.weight)
            except ValueError:
                raise AdminError(f"weight must be a number >= 0 or 'reset', not {args.weight!r}") from None
        return await call(base, token, "PUT", _member_path(args.name, "weight"), {"weight": weight}, by)
    if args.action == "clear":
        return await call(base, token, "DELETE", _member_path(args.name, "override"), None, by)
    return await call(base, token, "GET", "/overrides", None, by)


def run(args: argparse.Namespace) -> int:
    try:
        data = asyncio.run(_run(args))
    except (AdminError, SecretError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.action == "overrides":
        rows = data.get("overrides", [])
        if not rows:
            print("no overrides")
        for o in rows:
            parts = (["draining"] if o["draining"] else []) + ([f"weight {o['weight']:g}"] if o["weight"] is not None else [])
            gone = "" if o.get("known", True) else " (not a member now)"
            note = f" - {o['note']}" if o.get("note") else ""
            print(f"{o['member']}{gone}: {', '.join(parts) or 'no change'} by {o['by'] or '?'}{note}")
    else:
        print(_describe(data))
    return 0
