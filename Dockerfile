# The product on the official Airflow image: the package and its locked dependencies.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update && apt-get install -y --no-install-recommends prometheus && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:root pyproject.toml uv.lock README.md /opt/anomaly/
COPY --chown=airflow:root anomaly /opt/anomaly/anomaly
COPY --chown=airflow:root sql /opt/anomaly/sql
RUN pip install --no-cache-dir uv \
 && cd /opt/anomaly && uv export --frozen --no-dev --no-hashes --no-emit-project > /tmp/req.txt \
 && pip install --no-cache-dir -r /tmp/req.txt && pip install --no-cache-dir --no-deps /opt/anomaly
