-- Routes written through the management API; the TOML file's routes stay the config's own.

-- One row per route: `spec` is the route as a [[routes]] entry would write it (JSON), so it is
-- validated by the same code as the file's routes every time it is loaded.
CREATE TABLE api_routes (
    id         TEXT   PRIMARY KEY,         -- r_ and 16 random hex digits
    tenant_id  TEXT   NOT NULL,
    spec       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX api_routes_tenant ON api_routes (tenant_id);

-- Where a tenant may put routes, as the operator assigned it: host names and/or a path prefix.
CREATE TABLE tenant_namespaces (
    tenant_id   TEXT PRIMARY KEY,
    hosts       TEXT NOT NULL,             -- JSON array of lower-case host names
    path_prefix TEXT                       -- e.g. /acme; NULL: none
);

-- Bumped with every change to the two tables above, so every instance notices a change with
-- one cheap read, and concurrent writes of one tenant's routes are serialized on this row.
CREATE TABLE route_changes (
    id      INTEGER PRIMARY KEY,
    version BIGINT  NOT NULL
);
INSERT INTO route_changes (id, version) VALUES (1, 0);
