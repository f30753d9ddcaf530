"""distributed-images: a peer-to-peer container image registry mirror."""
