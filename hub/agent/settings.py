"""What one agent is told: its member, image prefix, namespaces, periods, and its report token."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def agent_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("binder-federation")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class AgentSettings:
    member: str
    image_prefix: str
    namespace: str = "default"
    build_namespace: str | None = None      # BinderHub's build_namespace, when not the same
    node_selector: str | None = None        # only nodes matching this label selector count
    specs: tuple[str, ...] = ()             # launch specs `<provider>/<spec>` known to be launched here
    period: float = 30.0                    # seconds between two reports
    watch_timeout: int = 300                # seconds one watch request may last (server side)
    request_timeout: float = 30.0           # seconds one list request may take
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    forget_after: float = 30 * 86400.0      # seconds a learned spec is kept without its image being seen

    @property
    def namespaces(self) -> tuple[str, ...]:
        if self.build_namespace and self.build_namespace != self.namespace:
            return (self.namespace, self.build_namespace)
        return (self.namespace,)

    @property
    def report_ttl(self) -> int:
        """Seconds the report key lives in Redis: it disappears soon after the agent stops."""
        return int(max(10 * self.period, 300))


TokenSource = Callable[[], str]


def token_from(file: str | None, value: str | None) -> TokenSource:
    """The member's report token, read again for every report so a rotated secret is picked up."""
    if file:
        path = Path(file)

        def read() -> str:
            token = path.read_text().strip()
            if not token:
                raise ValueError(f"token file {path} is empty")
            return token

        return read
    if value:
        return lambda: value
    raise ValueError("no report token: give --token-file or set BINDERFED_AGENT_TOKEN")
