"""Real-parts test infrastructure: upstream registries, images, clients and node processes.

Everything listens on 127.0.0.1 only, on free ports, under temporary directories:

    process       Daemon (a child with logs in files, SIGTERM/SIGKILL), free_port, run
    registry      Debian's docker-registry: plain, pull-through cache, or token auth; access log
    tokenserver   a token server (JWT RS256, x5c) and TokenRegistry (registry + token server)
    images        OCI image layouts written in Python (one image or a multi-arch index), push
    skopeo        skopeo pulls to dir: and the digest check of what it wrote
    containerd    a containerd daemon and `ctr images pull --hosts-dir` with hosts.toml mirrors
    podman        podman with its storage, registries.conf and containers.conf in a temp dir
    node          a `distributed-images node` process, its /readyz and /metrics
    fakeupstream  a misbehaving upstream (wrong bytes, short or slow bodies)
    rawhttp       HTTP requests sent byte for byte (`..` in paths, HEAD bodies)
    outcome       whether the running test failed (fixtures print logs then)
    httpserver    an aiohttp app on a background thread (for the token server and fakes)

`tests/conftest.py` wraps these in fixtures.
"""
