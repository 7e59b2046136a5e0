#!/usr/bin/env bash
# Installs the system packages of packages.txt (Debian 12) and checks Node.js. Needs root (uses sudo
# when run as another user).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mapfile -t pkgs < <(grep -vE '^\s*(#|$)' "$here/packages.txt")
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then exec sudo "$0" "$@"; fi
  echo "install-deps: run as root (apt-get needs it)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
if ! command -v node >/dev/null || ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 15) ? 0 : 1)'; then
  echo "install-deps: Node.js 20.15 or newer is needed (found: $(node --version 2>/dev/null || echo none))." >&2
  echo "install-deps: Debian 12's own nodejs is 18; install Node.js 20 LTS from nodejs.org or NodeSource." >&2
  exit 1
fi
echo "install-deps: ${#pkgs[@]} packages installed; node $(node --version)"
