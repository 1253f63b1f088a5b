#!/usr/bin/env bash
# What a three-node cluster ships between nodes, partial aggregate against gather (not a test):
# `scripts/bench-cluster.sh [--rows N] [--groups G]`. About a minute at the default 3M rows.
exec "$(dirname "$0")/with-server.sh" scripts/bench_cluster.py "$@"
