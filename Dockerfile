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
COPY pyproject.toml constraints.txt README.md ./
COPY lossaudit lossaudit
COPY pipelines pipelines
COPY transforms transforms
COPY configs configs
# tensorflow[and-cuda] brings the CUDA libraries; the NVIDIA driver comes
# from the host (Dataflow's install-nvidia-driver service option).
RUN pip install --no-cache-dir -c constraints.txt "tensorflow[and-cuda]==2.21.*" . \
    && python -c "import lossaudit.pipelines.audit, apache_beam; print(apache_beam.__version__)"
ENTRYPOINT ["/opt/apache/beam/boot"]
