# One image for both roles; the command picks one:
#   docker run IMAGE                                   -> gateway (node /app/dist/gateway/main.js)
#   docker run IMAGE /app/dist/worker/main.js          -> worker
# The Kubernetes manifests (k8s/) set `command: ["node", "/app/dist/<role>/main.js"]` explicitly.
# Build and final stage share one base, so better-sqlite3's native addon is built for the same
# glibc and Node ABI it runs on.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# better-sqlite3 installs a prebuilt addon when one matches; these build it from source when none does.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci
COPY . .
RUN npm run build \
 && npm prune --omit=dev

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
# Owned by root and read-only to the app user: the process can write only to mounted volumes
# (KV_DATA_DIR, KV_BACKUP_DIR, /tmp), which also suits readOnlyRootFilesystem.
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The compiled code loads the .proto files at run time (shared/proto.ts looks for ../../proto).
COPY --from=build /app/proto ./proto
# Numeric, so Kubernetes' runAsNonRoot can verify it (the image's `node` user has uid 1000).
USER 1000:1000
EXPOSE 50051 50052 9100 9101
# node is PID 1: both entry points handle SIGTERM (drain, close the database, exit 0) themselves.
ENTRYPOINT ["node"]
CMD ["/app/dist/gateway/main.js"]
