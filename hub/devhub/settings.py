"""How one dev member behaves: its name, quota, timings, rate limit and build tokens."""

from __future__ import annotations

from dataclasses import dataclass

from .. import build_tokens


@dataclass(frozen=True)
class DevHubSettings:
    """How one dev member behaves. Durations are in seconds.

    A fresh launch takes about `build_seconds + launch_seconds`; a cached one about
    `launch_seconds`. `event_interval` is the target spacing of log lines (at least
    three `building` and several `launching` events are sent whatever the durations).
    `quota` None means unlimited. `public_url` overrides the base of the server URLs
    in `ready` events (default: the address the request came to). `rate_limit`:
    `/build/` launches one visitor address may start per `rate_limit_period` seconds
    without a build token (BinderHub's default is 10 per hour; 0 = no limit).
    `build_token_secret` (hex, like BINDERHUB_BUILD_TOKEN_SECRET): None = a random one.
    `issue_build_tokens` False: the launch page embeds none, as BinderHub before build tokens.
    """

    name: str = "devhub"
    quota: int | None = None
    build_seconds: float = 2.0
    launch_seconds: float = 1.0
    event_interval: float = 0.2
    idle_cull_seconds: float = 600.0
    image_prefix: str = "devhub/"
    report_quota: bool = True
    keepalive_seconds: float = 25.0
    version: str = "1.0.0+devhub"
    build_image: str = "quay.io/jupyterhub/repo2docker:2024.07.0"
    public_url: str | None = None
    rate_limit: int = 0
    rate_limit_period: float = 3600.0
    build_token_secret: str | None = None
    build_token_expires: float = build_tokens.DEFAULT_EXPIRES
    issue_build_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.rate_limit, bool) or self.rate_limit < 0:
            raise ValueError(f"devhub rate_limit must be a non-negative integer, not {self.rate_limit!r}")
        if self.rate_limit_period <= 0 or self.build_token_expires <= 0:
            raise ValueError("devhub rate_limit_period and build_token_expires must be positive")
        if self.build_token_secret is not None:
            try:
                bytes.fromhex(self.build_token_secret)
            except ValueError:
                raise ValueError("devhub build_token_secret must be hexadecimal") from None
        if not self.name:
            raise ValueError("devhub name must not be empty")
        if self.quota is not None and (isinstance(self.quota, bool) or self.quota < 0):
            raise ValueError(f"devhub quota must be None or a non-negative integer, not {self.quota!r}")
        for name in ("build_seconds", "launch_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"devhub {name} must not be negative")
        for name in ("event_interval", "idle_cull_seconds", "keepalive_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"devhub {name} must be positive")
        if self.public_url is not None:
            object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
