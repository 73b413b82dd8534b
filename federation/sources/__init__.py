"""Membership sources: where the member set comes from while the router runs.

- `file.FileSource`: the YAML config file, reloaded on change and on SIGHUP;
- `consul.ConsulSource`: Consul's catalog, watched with blocking queries.

Each source publishes its own list into `federation.membership.Membership`, which
merges them (the file wins over Consul for the same name). Admin overrides (drain,
weight) are not a member list: they live in the store so every replica sees them,
and `federation.placement.view` applies them on top of the merged set.

Each source is an object with `start()`/`stop()`, run by the app's lifecycle. The
modules are imported on use (`from federation.sources.consul import ...`), so a
router without Consul never imports the Consul client.
"""
