#!/usr/bin/env bash
# Peer test suites against pyaiml: `tools/peer_suites.sh hmmlearn [--control]`,
# `tools/peer_suites.sh gensim ...`. A thin wrapper over tools/peer_suites.py (see its header).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" tools/peer_suites.py "$@"
