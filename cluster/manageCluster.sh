#!/usr/bin/env bash
# The original MyCluster's manageCluster.sh, with the same flags, on top of
# `mycluster manage`. Acts on the cluster set up last unless -cn names one.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./manageCluster.sh [options]

Arguments:
  -c up | stop | rm | ps , --command up | stop | rm | ps
  (Required) Command to be run against the cluster.

  -cn <val>, --clusterName <val>
  (Optional) The cluster. Default is the one set up last.
USAGE
}

command=""
name=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -c|--command) [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }; command="$2"; shift 2 ;;
    --command=*) command="${1#*=}"; shift ;;
    -cn|--clusterName) [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }; name="$2"; shift 2 ;;
    --clusterName=*) name="${1#*=}"; shift ;;
    -cn*) name="${1#-cn}"; shift ;;
    -c*) command="${1#-c}"; shift ;;
    *) echo "error: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$command" in
  up|stop|rm|ps) ;;
  "") echo "error: -c up|stop|rm|ps is required" >&2; usage >&2; exit 2 ;;
  *) echo "error: unknown command '$command': use up, stop, rm or ps" >&2; exit 2 ;;
esac

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
find_mycluster
if [ -n "$name" ]; then
  exec "$MYCLUSTER" manage --command "$command" --name "$name"
fi
exec "$MYCLUSTER" manage --command "$command"
