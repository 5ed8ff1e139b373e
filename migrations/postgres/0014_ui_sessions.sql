-- Dashboard sessions (`assetgc serve`, SPEC §8): a login with an API token makes one. Only the
-- SHA-256 of the cookie's value is kept, with the token's hash (so a token removed from the
-- config or the state database ends its sessions) and the session's CSRF token.
CREATE TABLE ui_sessions (
    id_sha256     TEXT NOT NULL PRIMARY KEY,
    token_sha256  TEXT NOT NULL,
    csrf          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
