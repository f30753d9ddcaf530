# syntax=docker/dockerfile:1
# The distributed-images image: one node with an embedded tracker by default.
#   docker build -t distributed_images_image .
#   docker run -d --name distributed_images -p 8080:8080 \
#       -v /path/to/local/images:/app/images distributed_images_image
# The same image runs the tracker (`tracker`), `containerd-config` and `doctor` (helm/ does).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY distributed_images distributed_images
COPY node node
COPY tracker tracker
COPY bench bench
# Wheels for the project and every dependency (libtorrent and grpcio ship manylinux wheels),
# so the final stage installs without compilers, caches or the sources.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt .

FROM python:3.11-slim
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home app \
    && mkdir -p /app/images /var/lib/distributed-images \
    && chown app:app /var/lib/distributed-images
WORKDIR /app

# Every flag of `distributed-images node` is also a DI_* variable: override any with `-e`.
# The node's defaults already listen on 0.0.0.0:8080 (registry) and 0.0.0.0:6881 (peers); no
# DI_LISTEN here, since the tracker, run from this image too, reads the same variable.
ENV PYTHONUNBUFFERED=1 \
    DI_DATA_DIR=/var/lib/distributed-images \
    DI_IMAGES_DIR=/app/images

# The cache survives the container; /app/images is mounted by the user (read-only is fine).
VOLUME ["/var/lib/distributed-images"]
EXPOSE 8080 6881 7070 7071
USER 10001:10001

# One image, two servers: the check asks the node's /healthz, or the tracker's, on the port the
# container's command uses (its flags, DI_* variables and config file are read as it reads them).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "distributed_images.healthcheck"]

ENTRYPOINT ["distributed-images"]
CMD ["node"]
