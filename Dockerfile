# syntax=docker/dockerfile:1
# The netpol-recommender image: the package installed from its wheel, run as a non-root user.
#   docker build -t REGISTRY/netpol-recommender:0.1.0 . && docker push REGISTRY/netpol-recommender:0.1.0

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY collectors/ collectors/
COPY recommender/ recommender/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir /wheels/netpol_recommender-*.whl
# A fixed numeric UID, so that the CronJob's runAsUser and runAsNonRoot can be checked against it.
RUN groupadd --system --gid 10001 netpol \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin netpol
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["netpol-recommender"]
CMD ["--help"]
