-- Schema version 4: SSM documents, one row per version.
CREATE TABLE documents (
    name TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    content TEXT NOT NULL,
    document_format TEXT NOT NULL DEFAULT 'JSON',
    document_type TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (name, version)
);
