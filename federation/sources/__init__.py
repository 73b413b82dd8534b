"""Membership sources: where the member set comes from while the router runs.

Every source is a `MembershipProvider`: a background service (`start()`/`stop()`, run
by the app's lifecycle) that publishes what it declares into one
`federation.membership.Membership`, which turns every publish into a new immutable
snapshot of the members and the settings in force (the file wins over Consul for the
same name). All of them reload the same way: the source notices a change (the file's
content, Consul's index) and publishes; nothing else is pushed around.

- `file.FileSource` (name "config"): the YAML config file, polled and reloaded on
  SIGHUP; it publishes its members and its settings in one snapshot;
- `consul.ConsulSource` (name "consul"): Consul's catalog, watched with blocking queries.

Admin overrides (drain, weight) are not a member list: they live in the store so every
replica sees them, are read with the rest of a launch's store state in one call, and
`federation.placement.view` applies them on top of the snapshot's members.

The modules are imported on use (`from federation.sources.consul import ...`), so a
router without Consul never imports the Consul client.
"""

from __future__ import annotations

from typing import Protocol


class MembershipProvider(Protocol):
    """One membership source."""

    name: str  # its key in the membership ("config", "consul"): what decides precedence

    async def start(self) -> None:
        """Publish what the source declares now (or as soon as it answers), then follow it."""

    async def stop(self) -> None:
        """Stop following; what it published stays in force."""
