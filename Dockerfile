# GPU image for multi-node runs. The Kubeflow MPI Operator jobs
# (cifar_job.yaml, mnli_job.yaml) run it as launcher and as workers.
#
#   docker build -t registry.example.com/multiwalk:v1 .
#   docker push registry.example.com/multiwalk:v1
#
# The base image brings a CUDA build of PyTorch, the version requirements.txt
# pins (the build fails otherwise); pick the CUDA version the nodes' NVIDIA
# driver supports, e.g.
#   docker build --build-arg BASE_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime ...
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/tmp/hf-home \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# OpenSSH: mpirun (MPICH's Hydra) starts the ranks on the workers over SSH.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-server openssh-client \
 && rm -rf /var/lib/apt/lists/*

# Everything in requirements.txt at the versions of constraints.txt, except
# the torch pin: the base image's CUDA torch stays, and must be that version.
# mpich + mpi4py come from PyPI as on a laptop.
WORKDIR /app
COPY requirements.txt constraints.txt ./
RUN grep -v '^torch==' requirements.txt > /tmp/requirements-gpu.txt \
 && grep -v '^torch==' constraints.txt > /tmp/constraints-gpu.txt \
 && pip install -r /tmp/requirements-gpu.txt -c /tmp/constraints-gpu.txt \
 && rm /tmp/requirements-gpu.txt /tmp/constraints-gpu.txt \
 && python -c "import torch; pin = open('requirements.txt').read().split('torch==')[1].split()[0]; \
assert torch.__version__.split('+')[0] == pin, f'base image has torch {torch.__version__}, requirements pin {pin}'" \
 && python -c "import torch, mpi4py; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" \
 && command -v mpirun

# An unprivileged user runs everything. The MPI Operator mounts the job's SSH
# key pair (id_rsa, id_rsa.pub, authorized_keys) into ~/.ssh (sshAuthMountPath
# in the job files); sshd runs as this user on port 2222 with that key as its
# host key, and the launcher's ssh reaches the workers there.
ARG SSH_PORT=2222
RUN if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
 && useradd --create-home --uid 1000 --user-group --shell /bin/bash mpiuser \
 && printf '%s\n' \
      "Port ${SSH_PORT}" \
      "PidFile /home/mpiuser/sshd.pid" \
      "HostKey /home/mpiuser/.ssh/id_rsa" \
      "AuthorizedKeysFile /home/mpiuser/.ssh/authorized_keys" \
      "StrictModes no" \
      "PasswordAuthentication no" \
      "KbdInteractiveAuthentication no" \
      "PermitRootLogin no" \
      > /home/mpiuser/.sshd_config \
 && chown mpiuser:mpiuser /home/mpiuser/.sshd_config \
 && printf '%s\n' \
      "# MPI Operator workers (<job>-worker-<i>.<job>.<namespace>.svc) only." \
      "# Pods are new on every run, so their host keys are accepted on first" \
      "# contact; the read-only ~/.ssh mount cannot hold a known_hosts file." \
      "Host *-worker-*" \
      "    Port ${SSH_PORT}" \
      "    StrictHostKeyChecking accept-new" \
      "    UserKnownHostsFile /tmp/mpi_known_hosts" \
      "    LogLevel ERROR" \
      > /etc/ssh/ssh_config.d/mpi-operator.conf

COPY . /app
USER mpiuser
EXPOSE ${SSH_PORT}
