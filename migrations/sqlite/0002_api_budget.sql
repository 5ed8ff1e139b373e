-- The Admin API budget of metered accounts (Cloudinary), kept between runs (SPEC §4).
-- `account` is "<cloud name>:<api key>"; the secret is never stored.

-- Calls per minute over the last hour: a rolling 60-minute window survives the process.
CREATE TABLE api_budget_calls (
    account TEXT    NOT NULL,
    minute  INTEGER NOT NULL,               -- minutes since the Unix epoch, UTC
    calls   INTEGER NOT NULL,
    PRIMARY KEY (account, minute)
);

-- The provider's last word from its X-FeatureRateLimit-* headers; wins while reset_at is ahead.
CREATE TABLE api_budget_provider (
    account    TEXT    PRIMARY KEY,
    rate_limit INTEGER NOT NULL,
    remaining  INTEGER NOT NULL,
    reset_at   TEXT    NOT NULL,            -- RFC 3339 UTC
    seen_at    TEXT    NOT NULL
);
