//! Versioned migrations of the administrative database. `PRAGMA user_version` counts the
//! migrations applied; each runs once, inside the transaction that bumps the version.

/// Append only: a released migration is never edited, a new step is added instead.
pub const MIGRATIONS: &[&str] = &[
    // 1: domains, mailboxes, local accounts and the settings that are administrative state.
    r#"
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE domains (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        locked        INTEGER NOT NULL DEFAULT 0,
        -- R12: the mailbox that receives postmaster@; NULL means the first mailbox created.
        admin_mailbox TEXT,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE mailboxes (
        id          INTEGER PRIMARY KEY,
        domain_id   INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        locked      INTEGER NOT NULL DEFAULT 0,
        -- R15: the size limit in bytes (NULL: none) and the account it is charged to.
        quota_bytes INTEGER,
        quota_owner TEXT,
        created_at  INTEGER NOT NULL,
        UNIQUE (domain_id, name)
    );
    CREATE INDEX mailboxes_by_name ON mailboxes(name);
    -- The server's own account database (method `local`), like the SAM of a Windows server.
    CREATE TABLE local_accounts (
        name          TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        -- Comma-separated group names; R7 gives `POP3 Users` to accounts made by add.
        groups        TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    "#,
    // 2: R22 — a mailbox whose Active Directory user exists (made or linked by migratetoad).
    r#"
    ALTER TABLE mailboxes ADD COLUMN ad_linked INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: docs/spec.md §10 — the separate mail secret for APOP and CRAM-MD5, encrypted with the
    // store's key (`<data_dir>/secret.key`), never in clear.
    r#"
    CREATE TABLE mail_secrets (
        mailbox_id INTEGER PRIMARY KEY REFERENCES mailboxes(id) ON DELETE CASCADE,
        nonce      BLOB NOT NULL,
        ciphertext BLOB NOT NULL
    );
    "#,
    // 4: addresses that are not mailboxes (R28): aliases, the catch-all (`name` ''), and a
    // postmaster pointed somewhere (R12). A target is an address: a local mailbox or alias in
    // lower case, or an outside address with its local part as written.
    r#"
    CREATE TABLE aliases (
        id         INTEGER PRIMARY KEY,
        domain_id  INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (domain_id, name)
    );
    CREATE TABLE alias_targets (
        alias_id INTEGER NOT NULL REFERENCES aliases(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        target   TEXT NOT NULL,
        PRIMARY KEY (alias_id, target)
    );
    CREATE INDEX alias_targets_by_target ON alias_targets(target);
    "#,
    // 5: the login cache's generation (docs/spec.md, "The login cache"). Every change that can
    // make a remembered login wrong bumps it, by trigger, whichever process makes it; a running
    // server reads it before answering from its cache. Changes kept outside this database (a
    // passwd-file record, AD) are bumped by the verb that makes them (`credentials_changed`).
    r#"
    CREATE TABLE credential_generation (
        only  INTEGER PRIMARY KEY CHECK (only = 1),
        value INTEGER NOT NULL
    );
    INSERT INTO credential_generation(only, value) VALUES (1, 0);
    CREATE TRIGGER credentials_account_added AFTER INSERT ON local_accounts
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_account_changed AFTER UPDATE ON local_accounts
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_account_deleted AFTER DELETE ON local_accounts
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_mailbox_added AFTER INSERT ON mailboxes
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_mailbox_changed
        AFTER UPDATE OF locked, ad_linked, name, domain_id ON mailboxes
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_mailbox_deleted AFTER DELETE ON mailboxes
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_domain_changed AFTER UPDATE OF locked, name ON domains
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_domain_deleted AFTER DELETE ON domains
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_secret_added AFTER INSERT ON mail_secrets
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_secret_changed AFTER UPDATE ON mail_secrets
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_secret_deleted AFTER DELETE ON mail_secrets
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_setting_added AFTER INSERT ON settings
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    CREATE TRIGGER credentials_setting_changed AFTER UPDATE ON settings
        BEGIN UPDATE credential_generation SET value = value + 1; END;
    "#,
];
