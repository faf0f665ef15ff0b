#!/usr/bin/env bash
# Runs Docker Compose, whichever this machine has: `docker compose` (the plugin), else
# `docker-compose`; with neither, installs Debian's docker-compose (as root) or says how.
#
#   docker/compose/compose.sh -f docker-compose.yml -f docker-compose.local.yml up -d
set -euo pipefail

if docker compose version >/dev/null 2>&1; then
  exec docker compose "$@"
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing docker-compose (neither \`docker compose\` nor \`docker-compose\` is here)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
  else
    echo "Docker Compose is needed: install the compose plugin or docker-compose (Debian: sudo apt-get install docker-compose)" >&2
    exit 1
  fi
fi
exec docker-compose "$@"
