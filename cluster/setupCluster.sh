#!/usr/bin/env bash
# The original MyCluster's setupCluster.sh, with the same flags, on top of
# `mycluster setup` (Docker Engine API, no registry needed).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./setupCluster.sh [options]

Arguments:
  -cn <val>, --clusterName <val>, -cn<val>
    (Optional) Cluster Name. Default is myCluster

  -s, --scaleWorkers
    (Optional) Number of workers to be instantiated in the cluster. Default is 3

USAGE
}

name=myCluster
workers=3
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -cn|--clusterName) [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }; name="$2"; shift 2 ;;
    --clusterName=*) name="${1#*=}"; shift ;;
    -cn*) name="${1#-cn}"; shift ;;
    -s|--scaleWorkers) [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }; workers="$2"; shift 2 ;;
    --scaleWorkers=*) workers="${1#*=}"; shift ;;
    -s*) workers="${1#-s}"; shift ;;
    *) echo "error: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
find_mycluster
exec "$MYCLUSTER" setup --name "$name" --workers "$workers"
