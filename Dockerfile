# A Cairn node. docker-compose.yml runs three of them as a cluster.
FROM node:20-bookworm-slim AS build
# node-gyp builds native/ (SO_PEERCRED for the Workload API, ECDSA checks of CSRs): it needs these.
RUN apt-get update && apt-get install -y --no-install-recommends g++ make python3 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY bin ./bin
COPY native ./native
COPY src ./src
COPY proto ./proto
# npm ci runs the prepare script: it builds the native addons and compiles src/ into dist/.
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /app /app
ENV CAIRN_DATA=/var/lib/cairn \
    CAIRN_HTTP=0.0.0.0:8500 \
    CAIRN_GRPC=0.0.0.0:8600 \
    CAIRN_PEER=0.0.0.0:8700
VOLUME /var/lib/cairn
EXPOSE 8500 8600 8700
# Healthy once the node knows a leader: the HTTP API answers and names one.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8500/v1/status/leader').then(r=>r.json()).then(l=>process.exit(l?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/cairn"]
CMD ["server"]
