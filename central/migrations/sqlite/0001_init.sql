-- certvault-central schema, SQLite flavour. Times are Unix seconds (UTC); keys and certificates are DER.
CREATE TABLE device_types (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    serial TEXT NOT NULL UNIQUE,
    device_type_id BIGINT NOT NULL REFERENCES device_types(id),
    device_public_key BLOB,
    transport_public_key BLOB,
    entitled BIGINT NOT NULL,
    last_counter BIGINT NOT NULL DEFAULT 0,
    last_seen BIGINT,
    replaced_by TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE request_nonces (
    nonce BLOB PRIMARY KEY,
    device_id BIGINT NOT NULL REFERENCES devices(id),
    seen_at BIGINT NOT NULL
);

CREATE TABLE cas (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_uri TEXT NOT NULL,
    certificate BLOB NOT NULL,
    crl_number BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE crls (
    id INTEGER PRIMARY KEY,
    ca_id BIGINT NOT NULL REFERENCES cas(id),
    crl_number BIGINT NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL,
    der BLOB NOT NULL,
    UNIQUE (ca_id, crl_number)
);

CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    device_id BIGINT NOT NULL REFERENCES devices(id),
    status TEXT NOT NULL CHECK (status IN ('open', 'issued', 'fulfilled')),
    issued_nonce BLOB,
    created_at BIGINT NOT NULL,
    issued_at BIGINT,
    fulfilled_at BIGINT
);

CREATE TABLE order_items (
    id INTEGER PRIMARY KEY,
    order_id BIGINT NOT NULL REFERENCES orders(id),
    label TEXT NOT NULL,
    key_algorithm TEXT NOT NULL,
    application_uri TEXT NOT NULL,
    host_names TEXT NOT NULL,
    validity_days BIGINT NOT NULL,
    issuer TEXT NOT NULL,
    key_origin TEXT NOT NULL CHECK (key_origin IN ('device', 'central')),
    status TEXT NOT NULL CHECK (status IN ('open', 'issued'))
);

CREATE TABLE certificates (
    id INTEGER PRIMARY KEY,
    serial_number TEXT NOT NULL,
    device_id BIGINT NOT NULL REFERENCES devices(id),
    order_item_id BIGINT REFERENCES order_items(id),
    issuer TEXT NOT NULL,
    ca_id BIGINT REFERENCES cas(id),
    subject TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    der BLOB NOT NULL,
    chain BLOB NOT NULL,
    revoked_at BIGINT,
    revocation_reason TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX certificates_serial ON certificates(serial_number);
CREATE INDEX certificates_not_after ON certificates(not_after);

CREATE TABLE receipts (
    id INTEGER PRIMARY KEY,
    device_id BIGINT NOT NULL REFERENCES devices(id),
    nonce BLOB NOT NULL,
    counter BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);

CREATE TABLE key_backups (
    id INTEGER PRIMARY KEY,
    device_id BIGINT NOT NULL REFERENCES devices(id),
    certificate_id BIGINT NOT NULL REFERENCES certificates(id),
    label TEXT NOT NULL,
    key_algorithm TEXT NOT NULL,
    spki BLOB NOT NULL,
    sealed_backup BLOB NOT NULL,
    pending_restore BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
