# The real redis-server (from the runtime base) with the harness: the control.
ARG BASE_RUNTIME=handoff-lab/base-runtime:latest
FROM ${BASE_RUNTIME}
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
LABEL lab.image="handoff-lab/redis" \
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
CMD ["--", "redis-server", "--save", "", "--appendonly", "no"]
