# The image of every Ray node of a Hindsight cluster (head, CPU workers, GPU learner), for
# deploy/cluster.yaml and deploy/kuberay/. It installs exactly what `make run` installs
# (tests/test_deploy.py compares the pip steps with the Makefile's): a venv, the pinned
# torch first, then the package with its dev extras.
#
#   docker build -t REGISTRY/hindsight:0.1.0 .
#   docker build --build-arg TORCH_SPEC="torch==2.13.0 --index-url URL-OF-A-CUDA-INDEX" ...
FROM python:3.11-slim

# wget: KubeRay's readiness/liveness probes call it inside the container.
RUN apt-get update && apt-get install -y --no-install-recommends wget && rm -rf /var/lib/apt/lists/*

ARG TORCH_SPEC="torch==2.13.0"
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
RUN python -m pip install --quiet --upgrade pip
RUN python -m pip install ${TORCH_SPEC}

WORKDIR /opt/hindsight
COPY . .
RUN python -m pip install -e ".[dev]"

# Run directories (config, TensorBoard, checkpoints, the store) go here; mount a volume.
RUN mkdir -p /data/runs
CMD ["hindsight", "--help"]
