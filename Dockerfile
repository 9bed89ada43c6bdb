# The cloud consumers' image (docs/deploy.md): `docker build -t switchyard .`, then
# `docker run switchyard archive` (or monitor, ingest, site add <id>, …). Production runs the
# compiled CLI with plain node: no TypeScript loader in the process.
FROM node:22-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY deploy/build.sh deploy/
# Every folder tsconfig.build.json compiles; test/deploy.test.ts builds from exactly these COPYs.
COPY cli cli
COPY lib lib
COPY schemas schemas
COPY edge edge
COPY cloud cloud
COPY stack stack
COPY simulate simulate
COPY dev dev
# tsc, plus the files modules read at run time (tsc does not emit them): the same tree as a release.
RUN bash deploy/build.sh

FROM node:22-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# The image's `node` user (uid 1000), by number so that Kubernetes can check runAsNonRoot.
USER 1000:1000
ENTRYPOINT ["node", "dist/cli/main.js"]
