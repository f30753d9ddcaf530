"""The tracker: soft-state coordination of the cluster's nodes over gRPC."""
