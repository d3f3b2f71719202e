# Worker image for Dataflow GPU jobs: TensorFlow with CUDA, this project and
# the Beam SDK harness of the same version as the launcher (2.77.0). It is
# also the Flex Template image (templates/flex/metadata.json): Dataflow runs
# the template launcher from it, then the same image as the SDK container.
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/lossaudit:TAG .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/lossaudit:TAG
FROM apache/beam_python3.11_sdk:2.77.0 AS beam
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base AS launcher

FROM python:3.11-slim
COPY --from=beam /opt/apache/beam /opt/apache/beam
COPY --from=launcher /opt/google/dataflow/python_template_launcher \
    /opt/google/dataflow/python_template_launcher
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/lossaudit/pipelines/flex_template.py
WORKDIR /opt/lossaudit
# Dataflow's install-nvidia-driver mounts the host's NVIDIA driver
# (libcuda.so) under /usr/local/nvidia/lib64 and its tools under
# /usr/local/nvidia/bin; the CUDA libraries themselves come from the pinned
# nvidia-* wheels below (constraints-gpu.txt), which TensorFlow finds in
# site-packages. /usr/local/cuda/lib64 is where a CUDA base image would
# put them.
ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64 \
    PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:$PATH
COPY pyproject.toml constraints.txt constraints-gpu.txt README.md ./
COPY lossaudit lossaudit
COPY pipelines pipelines
COPY transforms transforms
COPY configs configs
COPY scripts/check-gpu-image scripts/check-gpu-image
RUN pip install --no-cache-dir -c constraints.txt -c constraints-gpu.txt \
        "tensorflow[and-cuda]==2.21.0" . \
    && python -c "import lossaudit.pipelines.audit, apache_beam; print(apache_beam.__version__)"
# On a GPU machine: docker run --rm --gpus all --entrypoint \
#   /opt/lossaudit/scripts/check-gpu-image IMAGE
ENTRYPOINT ["/opt/apache/beam/boot"]
