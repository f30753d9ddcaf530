"""Peer-to-peer transfer of layer chunks: one private BitTorrent v1 torrent per chunk."""
