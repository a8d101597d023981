# syntax=docker/dockerfile:1
# G-Edge images, two targets from one file:
#   docker build --target cpu -t registry.example.com/gedge-cpu:0.1.0 .   (web, CPU workers, reaper, migrations)
#   docker build --target gpu -t registry.example.com/gedge-gpu:0.1.0 .   (the inference worker, onnxruntime-gpu)
# Builder stages make a virtualenv from wheels, installing a lock file: requirements/cpu.txt (Python 3.11) or
# requirements/gpu.txt (Python 3.12, onnxruntime-gpu and onnx), exact versions with hashes, compiled by
# `make lock` from the ranges in pyproject.toml (docs/dependencies.md). The final stages copy the virtualenv
# and the source, nothing else: no compiler, no pip cache, no apt lists. The model is not in the image: it lives
# on the shared volume (GEDGE_MODEL_PATH), so a model change needs no rebuild.

ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# --- the application's source, the same in both images ---
FROM scratch AS source
WORKDIR /app
COPY manage.py pyproject.toml ./
COPY gedge_site ./gedge_site
COPY jobs ./jobs
COPY stages ./stages
COPY templates ./templates
COPY static ./static

# --- CPU ---
FROM python:3.11-slim-bookworm AS builder-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The runtime dependencies and onnxruntime (the `cpu` extra), locked for this image's Python 3.11 and glibc.
COPY requirements/cpu.txt /tmp/requirements.txt
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --only-binary=:all: --require-hashes -r /tmp/requirements.txt

FROM python:3.11-slim-bookworm AS cpu
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GEDGE_VAR_DIR=/app/var
RUN groupadd --system --gid 10001 gedge && useradd --system --uid 10001 --gid 10001 --no-create-home gedge
COPY --from=builder-cpu /opt/venv /opt/venv
COPY --from=source /app /app
WORKDIR /app
USER 10001:10001
EXPOSE 8000 9191
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", "gedge_site.asgi:application"]

# --- GPU: the CUDA runtime with cuDNN that onnxruntime-gpu links against; Ubuntu's Python 3.12 ---
FROM ${CUDA_IMAGE} AS builder-gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
# The runtime dependencies with onnxruntime-gpu (CUDA 12, cuDNN 9) and onnx, which writes the dynamic-batch copy
# of the model that batched inference on CUDA runs (the `gpu` extra), locked for Ubuntu 24.04's Python 3.12.
COPY requirements/gpu.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --only-binary=:all: --require-hashes -r /tmp/requirements.txt

FROM ${CUDA_IMAGE} AS gpu
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GEDGE_VAR_DIR=/app/var \
    DEBIAN_FRONTEND=noninteractive NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gedge && useradd --system --uid 10001 --gid 10001 --no-create-home gedge
COPY --from=builder-gpu /opt/venv /opt/venv
COPY --from=source /app /app
WORKDIR /app
USER 10001:10001
EXPOSE 9191
CMD ["python", "manage.py", "rundramatiq", "--queues", "inference"]
