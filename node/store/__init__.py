"""The node's content-addressed store: verified blobs kept as layer chunks, SQLite metadata."""
