#!/usr/bin/env bash
# Builds the Go peer (tests/peers/go/peer) OFFLINE from Debian's packages
# (golang-go, golang-google-grpc-dev, golang-golang-x-net-dev, which put
# their sources under /usr/share/gocode): GOPATH mode, no module download.
# Usage: build.sh OUTPUT_BINARY
set -euo pipefail
out="$(realpath -m "${1:?usage: build.sh OUTPUT_BINARY}")"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$(dirname "$out")"
cd "$here"
export GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
export GOCACHE="${GOCACHE:-$(dirname "$out")/go-cache}"
go build -o "$out" ./peer
