"""The node agent: a registry mirror on every host, fed by peers, the store and upstreams."""
