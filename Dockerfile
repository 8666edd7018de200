# easel images. No build step (tsx runs the TypeScript sources), so the stages only install dependencies.
#
#   docker build --target cpu -t easel:cpu .   # CPU: tfjs-node (libtensorflow CPU), wasm as fallback
#   docker build --target gpu -t easel:gpu .   # GPU: tfjs-node-gpu on CUDA 11.2 + cuDNN 8.1
#
# The GPU image: @tensorflow/tfjs-node-gpu 4.22 loads libtensorflow 2.9.1, built against CUDA 11.2 and cuDNN 8.1
# (it dlopens libcudart.so.11.0 and libcudnn.so.8; NVIDIA driver >= 450.80.02 on the node). tfjs's maintainers
# state the same versions (tensorflow/tfjs#8362). Hence the nvidia/cuda 11.2.2 + cuDNN 8 runtime base.
# Not built here: this repository's CI machine has no Docker engine (see docs/operations.md).

ARG NODE_VERSION=20.19.5

# ---- dependencies (node_modules for production, both tfjs-node packages fetched by their install scripts) ----
FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates python3 make g++ \
    && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# ---- application files shared by both images ----
FROM deps AS app
COPY bin ./bin
COPY src ./src
COPY examples ./examples
# CPU image drops the GPU binding (~400 MB of CUDA-linked libtensorflow it cannot load anyway)
RUN cp -a node_modules /node_modules.gpu && rm -rf node_modules/@tensorflow/tfjs-node-gpu

# ---- CPU image ----
FROM node:${NODE_VERSION}-bookworm-slim AS cpu
ENV NODE_ENV=production EASEL_LOG=info
WORKDIR /app
COPY --from=app /app/package.json /app/package-lock.json ./
COPY --from=app /app/node_modules ./node_modules
COPY --from=app /app/bin ./bin
COPY --from=app /app/src ./src
COPY --from=app /app/examples ./examples
# Non-root, and nothing under /app is writable: pods run with a read-only root filesystem (+ an emptyDir /tmp).
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["node", "/app/bin/easel.js"]
CMD ["--help"]

# ---- GPU image ----
FROM nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04 AS gpu
ENV NODE_ENV=production EASEL_LOG=info EASEL_BACKEND=tensorflow \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Node from the official image (its binary needs glibc >= 2.28; Ubuntu 20.04 has 2.31).
COPY --from=deps /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY --from=app /app/package.json /app/package-lock.json ./
COPY --from=app /node_modules.gpu ./node_modules
COPY --from=app /app/bin ./bin
COPY --from=app /app/src ./src
COPY --from=app /app/examples ./examples
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["node", "/app/bin/easel.js"]
CMD ["--help"]
