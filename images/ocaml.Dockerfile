# The OCaml servers: built and unit-tested on the toolchain base, shipped on the slim
# runtime base with the harness. Classic builder (docker-py has no BuildKit): no
# RUN --mount, and nothing here touches the network.
ARG BASE_BUILD=handoff-lab/base-build:latest
ARG BASE_RUNTIME=handoff-lab/base-runtime:latest

FROM ${BASE_BUILD} AS build
WORKDIR /src
COPY ocaml/ /src/
RUN dune build --profile release 2>&1 && dune test --profile release --force 2>&1

FROM ${BASE_RUNTIME}
COPY --from=build /src/_build/default/bin/eio_server.exe /usr/local/bin/eio_server
COPY --from=build /src/_build/default/bin/lwt_server.exe /usr/local/bin/lwt_server
# The harness is standard-library only: it runs as `python3 -m lab test`.
COPY lab/ /opt/lab/lab/
RUN python3 -m compileall -q /opt/lab
ENV PYTHONPATH=/opt/lab PYTHONDONTWRITEBYTECODE=1
ARG OCAML_VERSION=unknown
ARG EIO_VERSION=unknown
ARG LWT_VERSION=unknown
ARG URING_VERSION=unknown
ARG PYTHON_VERSION=unknown
ARG REDIS_VERSION=unknown
ARG LAB_REVISION=unknown
LABEL lab.image="handoff-lab/ocaml" \
      lab.version.ocaml="${OCAML_VERSION}" \
      lab.version.eio="${EIO_VERSION}" \
      lab.version.lwt="${LWT_VERSION}" \
      lab.version.uring="${URING_VERSION}" \
      lab.version.python="${PYTHON_VERSION}" \
      lab.version.redis="${REDIS_VERSION}" \
      lab.revision="${LAB_REVISION}"
USER lab
WORKDIR /home/lab
ENTRYPOINT ["python3", "-m", "lab", "test"]
CMD ["--", "eio_server"]
