# The OCaml servers: built and unit-tested on the toolchain base, shipped on the slim
# runtime base with the harness. Classic builder (docker-py has no BuildKit): no
# RUN --mount, and nothing here touches the network.
# Step order is for the cache: what rarely changes comes first; lab/ (edited often) and
# the revision label come last, so a harness edit rebuilds four steps, not the image.
ARG BASE_BUILD=handoff-lab/base-build:latest
ARG BASE_RUNTIME=handoff-lab/base-runtime:latest

FROM ${BASE_BUILD} AS build
WORKDIR /src
COPY ocaml/ /src/
RUN dune build --profile release 2>&1 \
 && dune test --profile release --force 2>&1 \
 && mkdir -p /out/bin \
 && cp _build/default/bin/eio_server.exe /out/bin/eio_server \
 && cp _build/default/bin/lwt_server.exe /out/bin/lwt_server
# The harness is standard-library only and runs as `python3 -m lab test`; compiled here
# (as root, same python3 as the runtime base) so the read-only container never has to.
COPY lab/ /opt/lab/lab/
RUN python3 -m compileall -q /opt/lab

FROM ${BASE_RUNTIME}
ENV PYTHONPATH=/opt/lab PYTHONDONTWRITEBYTECODE=1
USER lab
WORKDIR /home/lab
ENTRYPOINT ["python3", "-m", "lab", "test"]
CMD ["--", "eio_server"]
ARG OCAML_VERSION=unknown
ARG EIO_VERSION=unknown
ARG LWT_VERSION=unknown
ARG URING_VERSION=unknown
ARG DUNE_VERSION=unknown
ARG PYTHON_VERSION=unknown
ARG REDIS_VERSION=unknown
LABEL lab.image="handoff-lab/ocaml" \
      lab.version.ocaml="${OCAML_VERSION}" \
      lab.version.eio="${EIO_VERSION}" \
      lab.version.lwt="${LWT_VERSION}" \
      lab.version.uring="${URING_VERSION}" \
      lab.version.dune="${DUNE_VERSION}" \
      lab.version.python="${PYTHON_VERSION}" \
      lab.version.redis="${REDIS_VERSION}"
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /opt/lab/ /opt/lab/
ARG LAB_REVISION=unknown
LABEL lab.revision="${LAB_REVISION}"
