"""The OCI distribution API (pull category) as the node serves it."""
