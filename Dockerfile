FROM python:3.11-slim
WORKDIR /app
ENV HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The CPU build of torch: the default index would pull several GB of CUDA packages.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY app app
COPY knowledge knowledge
COPY jobs jobs
COPY evaluation evaluation
COPY migrations migrations
RUN pip install --no-cache-dir -e .
EXPOSE 8000
CMD ["learnkb", "serve", "--host", "0.0.0.0"]
