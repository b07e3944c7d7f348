# kolo's GPU trainer image: unsloth / transformers / peft on CUDA torch, llama-cpp-python built with CUDA plus the
# GGUF converter of exactly that llama.cpp, the kolo_trainer package, and the host CLI with its `server` extra (the
# Training Manager, for the compose service `kolo-serve`). Nothing else: no SSH server, no passwords, no EXPOSE.
# The host drives the `kolo` container with `docker exec` (`kolo train`, `kolo shell`), so its main process only
# has to stay alive; the `kolo-serve` service runs `kolo serve --runtime local` in this image instead.
#
#   kolo build                       (docker compose build, or docker build -t kolo:latest .)
#
# Versions: every Python version is pinned in container/pyproject.toml (extras gpu, train, export, rag, server) and
# read from there by container/requirements_from_pyproject.py -- the same extras scripts/install.sh and CI install,
# so the image and the tests cannot drift apart. The base image is pinned by tag below. apt packages are not pinned:
# Ubuntu's archive drops old versions, so a pinned apt version breaks the build within months; the pinned base tag
# fixes the distribution release.
#
# Layer order: pyproject.toml first -> dependencies (torch, unsloth: GBs) -> llama-cpp-python (a CUDA compile) ->
# kolo's code last, so editing kolo's code rebuilds only the last, small layers.

# torch 2.14.1 on PyPI is a CUDA 13.0 build (its wheels pull cuda-toolkit 13.0.x); llama.cpp is compiled with the
# same CUDA major here, so both need one driver (NVIDIA driver >= 580 on the host).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04
FROM ${CUDA_IMAGE}

# The user the trainer runs as. Files it writes into the bind-mounted data root belong to this uid on a Linux
# host, so it defaults to 1000 (the first user on most Linux machines); build with --build-arg KOLO_UID=$(id -u)
# (compose passes KOLO_UID/KOLO_GID) when yours differs.
ARG KOLO_UID=1000
ARG KOLO_GID=1000
# GPU generations llama.cpp's CUDA kernels are compiled for (CUDA 13 supports compute 7.5 and newer):
# Turing, Ampere, Ada, Hopper, Blackwell. Fewer architectures = a faster build.
ARG CUDA_ARCHITECTURES="75;80;86;89;90;100;120"

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/kolo/venv \
    PATH=/opt/kolo/venv/bin:$PATH \
    KOLO_DATA=/var/kolo_data \
    KOLO_CACHE=/opt/kolo/cache \
    HF_HOME=/var/kolo_cache/huggingface \
    UNSLOTH_DISABLE_STATISTICS=1

# python3-dev + build-essential + cmake: llama-cpp-python compiles here, and triton/unsloth compile small kernels
# at run time. git: some Hugging Face model repos need it. No openssh-server, no sudo.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev build-essential cmake ninja-build git ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Ubuntu 24.04 images ship a user "ubuntu" holding uid 1000; kolo's user takes that uid instead. KOLO_GID may name
# a group the image already has (20 "dialout" for a macOS user's `id -g`, 100 "users"): kolo then joins that group
# instead of creating one. The Hugging Face cache is a named volume that a container run with another uid may share:
# world-writable with the sticky bit.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
 && (getent group "${KOLO_GID}" >/dev/null || groupadd --gid "${KOLO_GID}" kolo) \
 && useradd --uid "${KOLO_UID}" --gid "${KOLO_GID}" --create-home --shell /bin/bash kolo \
 && python3 -m venv "${VIRTUAL_ENV}" \
 && python -m pip install --upgrade pip \
 && mkdir -p /var/kolo_data /var/kolo_cache/huggingface "${KOLO_CACHE}/sdist" \
 && chown "kolo:${KOLO_GID}" /var/kolo_data \
 && chmod 1777 /var/kolo_cache /var/kolo_cache/huggingface

# --- dependencies: this layer only changes when container/pyproject.toml does.
COPY container/pyproject.toml container/requirements_from_pyproject.py /opt/kolo/src/container/
RUN python /opt/kolo/src/container/requirements_from_pyproject.py /opt/kolo/src/container/pyproject.toml \
        gpu,train,export,rag,server --exclude llama-cpp-python > /opt/kolo/requirements-deps.txt \
 && pip install -r /opt/kolo/requirements-deps.txt

# --- llama-cpp-python with CUDA, from its sdist. The sdist is kept in $KOLO_CACHE/sdist: the converter step
# below extracts convert_hf_to_gguf.py + gguf-py from this very file, so converter and runtime are one version.
# The `ls | grep ggml-cuda` fails the build here, not at the first export, when CUDA did not make it in.
RUN LLAMA_REQ="$(python /opt/kolo/src/container/requirements_from_pyproject.py \
        /opt/kolo/src/container/pyproject.toml export --only llama-cpp-python)" \
 && pip download --no-deps --no-binary :all: -d "${KOLO_CACHE}/sdist" "${LLAMA_REQ}" \
 && CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" FORCE_CMAKE=1 \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip install --no-deps "${KOLO_CACHE}"/sdist/llama_cpp_python-*.tar.gz \
 && ls "${VIRTUAL_ENV}"/lib/python3*/site-packages/llama_cpp/lib/ | grep -q ggml-cuda \
 && pip check

# --- kolo's code: the only layers a code change rebuilds. kolo-trainer and kolo-cli (host/, the `kolo` command
# that the kolo-serve service runs) go in with --no-deps: their requirements, the server extra's too, are in the
# dependency layer above (tests/unit/project/test_image_files.py checks every --no-deps install). bench/ and
# scripts/gpu_smoke.sh come along so the GPU smoke check and benchmark run inside the image:
#   docker exec kolo bash /opt/kolo/src/scripts/gpu_smoke.sh
COPY container/ /opt/kolo/src/container/
COPY host/ /opt/kolo/src/host/
COPY bench/ /opt/kolo/src/bench/
COPY scripts/gpu_smoke.sh /opt/kolo/src/scripts/gpu_smoke.sh
RUN pip install --no-deps /opt/kolo/src/container /opt/kolo/src/host \
 && pip check \
 && python -m kolo_trainer.export.converter install \
 && python -m kolo_trainer --help > /dev/null \
 && kolo serve --help > /dev/null

USER kolo
WORKDIR /var/kolo_data

# Healthy = the trainer's entry point starts (light imports only) and the data root is writable by the trainer
# user (an unwritable bind mount would otherwise only show up when a run tries to save).
HEALTHCHECK --interval=60s --timeout=30s --start-period=30s --retries=3 \
    CMD ["sh", "-c", "test -w /var/kolo_data && python -m kolo_trainer --help > /dev/null"]

# Long-running and idle: work arrives through `docker exec` (`kolo train`, `kolo shell`). `kolo up` and compose
# run it with an init process (--init / init: true) that reaps exec'd children and forwards signals. The compose
# service kolo-serve replaces this command with `kolo serve` (docker-compose.yml).
CMD ["sleep", "infinity"]
