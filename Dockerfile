# An image in which `oem` runs, with the system tools it needs.
#   docker build -t oem .
#   docker run --rm -v "$PWD:/work" -w /work oem inspect flatcar_production_image.bin.bz2
# The mount backend needs loop devices: add --privileged (or --cap-add SYS_ADMIN --device /dev/loop-control
# and the /dev/loopN devices), e.g.
#   docker run --rm --privileged -v /dev:/dev -v "$PWD:/work" -w /work oem ...
FROM node:20-bookworm-slim
WORKDIR /opt/oem
COPY packages.txt scripts/install-deps.sh ./scripts-tmp/
RUN cp scripts-tmp/packages.txt . && bash scripts-tmp/install-deps.sh && rm -rf scripts-tmp /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build && npm run build:agent && npm prune --omit=dev --no-audit --no-fund
ENTRYPOINT ["/opt/oem/bin/run.js"]
CMD ["--help"]
