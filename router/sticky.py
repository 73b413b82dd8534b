"""The sticky value: which member a visitor's launch of one repository went to, signed.

The router hands it out in the sticky cookie (`router.sticky_cookie`) and as the `id`
of the stream relay's failover notices (an EventSource sends it back as
`Last-Event-ID` when it reconnects). A value the router did not sign, or signed for
another repository, is ignored: a visitor cannot pick a member by writing its name,
and a cookie from one launch does not steer another repository's. Even a valid one
only names a preference: placement honours it only while that member is admissible
and not overloaded (`federation.placement.place`, bounded load).

Form: `<member name>.<MAC>`, the MAC being the first 18 bytes of
HMAC-SHA256(secret, "binderfed-sticky-v1", member, repository key), base64url.
Member names are `[a-z0-9-]`, so the value needs no quoting in a cookie or an `id:` line.

The secret comes from `router.cookie_secret_file` or the environment variable
`router.cookie_secret_env` (default `BINDERFED_COOKIE_SECRET`), read at start and on
every reload like the admin token. Without one the router makes a random secret per
process and says so: stickiness then holds only on the replica that set the cookie,
so replicas behind one load balancer should share a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets

from federation.secrets import Secret, SecretError, read_secret

log = logging.getLogger("binderfed.router")

_CONTEXT = b"binderfed-sticky-v1"
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAC_BYTES = 18
MAX_VALUE = 100  # characters of a presented value looked at
# MACs remembered per signer: a launch of a popular repository signs the same (member,
# repository) pair again and again; an HMAC is a good part of a redirect's cost.
MAC_CACHE = 4096


class StickySigner:
    """Signs and checks sticky values with one secret."""

    def __init__(self, secret: bytes, origin: str = "") -> None:
        self._secret = secret
        self.origin = origin  # where the secret came from ("" = random for this process)
        self._macs: dict[tuple[str, str], str] = {}

    @classmethod
    def random(cls) -> "StickySigner":
        return cls(secrets.token_bytes(32))

    def _mac(self, member: str, repo_key: str) -> str:
        mac = self._macs.get((member, repo_key))
        if mac is None:
            if len(self._macs) >= MAC_CACHE:
                self._macs.clear()  # bounded: a cold start again is cheaper than tracking use
            mac = self._macs[(member, repo_key)] = self._compute_mac(member, repo_key)
        return mac

    def _compute_mac(self, member: str, repo_key: str) -> str:
        message = b"\0".join((_CONTEXT, member.encode(), repo_key.encode("utf-8", "surrogatepass")))
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def sign(self, member: str, repo_key: str) -> str:
        return f"{member}.{self._mac(member, repo_key)}"

    def member(self, value: str | None, repo_key: str) -> str | None:
        """The member a presented value names for `repo_key`, or None if it is not one we signed."""
        if not value or len(value) > MAX_VALUE:
            return None
        member, _, mac = value.strip().rpartition(".")
        if not _NAME.fullmatch(member) or not mac.isascii():
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(member, repo_key).encode()):
            return None
        return member


def load_signer(env_name: str, file_path: str, current: StickySigner | None, *, replicas: bool) -> StickySigner:
    """The signer for the configured secret; a random one (logged) when none is configured.

    `current` is kept when the secret did not change (a reload must not invalidate every
    cookie), and when a configured file cannot be read (logged).
    """
    try:
        secret: Secret = read_secret(env_name, file_path)
    except SecretError as exc:
        log.error("sticky-cookie secret %s; keeping the current one", exc)
        return current or StickySigner.random()
    if secret:
        if current is not None and current.origin == secret.origin and current._secret == secret.value.encode():
            return current
        log.info("sticky cookies are signed with the secret from %s", secret.origin)
        return StickySigner(secret.value.encode(), secret.origin)
    if current is not None and not current.origin:
        return current
    where = f"the file {file_path}" if file_path else f"the environment variable {env_name}"
    log.log(logging.WARNING if replicas else logging.INFO,
            "no sticky-cookie secret configured (%s): signing sticky cookies with a random secret of this process, "
            "so a cookie holds only on the replica that set it; give every replica the same secret", where)
    return StickySigner.random()
