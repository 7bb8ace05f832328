FROM python:3.11-slim
# The whole dependency tree, pinned (see README "Dependencies"); the GPU worker image builds with
# --build-arg REQUIREMENTS=requirements-gpu.lock (tensorflow[and-cuda] of the same version).
ARG REQUIREMENTS=requirements.lock
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.lock requirements-gpu.lock ./
RUN pip install -r ${REQUIREMENTS}
COPY . .
EXPOSE 8000
