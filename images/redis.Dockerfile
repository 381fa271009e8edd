# The real redis-server (from the runtime base) with the harness: the control.
# Same layout as ocaml.Dockerfile: a stage compiles the harness as root, the final stage
# puts rarely-changing steps first and the often-edited sources and the revision last.
ARG BASE_BUILD=handoff-lab/base-build:latest
ARG BASE_RUNTIME=handoff-lab/base-runtime:latest

FROM ${BASE_RUNTIME} AS sources
COPY lab/ /opt/lab/lab/
RUN python3 -m compileall -q /opt/lab

FROM ${BASE_RUNTIME}
ENV PYTHONPATH=/opt/lab PYTHONDONTWRITEBYTECODE=1
USER lab
WORKDIR /home/lab
ENTRYPOINT ["python3", "-m", "lab", "test"]
CMD ["--", "redis-server", "--save", "", "--appendonly", "no"]
ARG OCAML_VERSION=unknown
ARG EIO_VERSION=unknown
ARG LWT_VERSION=unknown
ARG URING_VERSION=unknown
ARG DUNE_VERSION=unknown
ARG PYTHON_VERSION=unknown
ARG REDIS_VERSION=unknown
LABEL lab.image="handoff-lab/redis" \
      lab.version.ocaml="${OCAML_VERSION}" \
      lab.version.eio="${EIO_VERSION}" \
      lab.version.lwt="${LWT_VERSION}" \
      lab.version.uring="${URING_VERSION}" \
      lab.version.dune="${DUNE_VERSION}" \
      lab.version.python="${PYTHON_VERSION}" \
      lab.version.redis="${REDIS_VERSION}"
COPY --from=sources /opt/lab/ /opt/lab/
ARG LAB_REVISION=unknown
LABEL lab.revision="${LAB_REVISION}"
