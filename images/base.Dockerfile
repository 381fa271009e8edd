# Used only where debian:sid-slim is present or pullable (see lab/orchestrate/base.py);
# otherwise the same two bases are bootstrapped with debootstrap. Two targets:
# `runtime` (python3, redis-server, the servers' shared libraries, user lab) and
# `build` (runtime + the OCaml toolchain). The package lists come as build args.
FROM debian:sid-slim AS runtime
ARG RUNTIME_PACKAGES
ARG LAB_UID=1000
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Check-Valid-Until=false \
      install -y --no-install-recommends ${RUNTIME_PACKAGES} \
 && (id -u lab >/dev/null 2>&1 || useradd --uid ${LAB_UID} --create-home --shell /bin/sh lab) \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc /usr/share/man /usr/share/locale
LABEL lab.base.method="dockerfile"

FROM runtime AS build
ARG BUILD_PACKAGES
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Check-Valid-Until=false \
      install -y --no-install-recommends ${BUILD_PACKAGES} \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
