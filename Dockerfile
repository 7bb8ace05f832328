FROM python:3.11-slim
ARG TENSORFLOW=tensorflow-cpu==2.21.0
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.txt .
RUN sed -i "s/^tensorflow-cpu==.*/${TENSORFLOW}/" requirements.txt && pip install -r requirements.txt
COPY . .
EXPOSE 8000
