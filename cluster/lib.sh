# Shared by setupCluster.sh and manageCluster.sh: finds the mycluster binary, building it
# from this checkout when needed. MYCLUSTER_BIN overrides.
find_mycluster() {
  if [ -n "${MYCLUSTER_BIN:-}" ]; then
    MYCLUSTER="$MYCLUSTER_BIN"
    return
  fi
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if command -v cargo >/dev/null 2>&1 && [ -f "$root/Cargo.toml" ]; then
    echo "Building mycluster (cargo build --release)..." >&2
    (cd "$root" && cargo build --release --quiet --bin mycluster) || {
      echo "error: building mycluster failed" >&2
      exit 1
    }
    MYCLUSTER="$root/target/release/mycluster"
  elif command -v mycluster >/dev/null 2>&1; then
    MYCLUSTER="$(command -v mycluster)"
  else
    echo "error: no mycluster binary: install Rust (cargo) or set MYCLUSTER_BIN" >&2
    exit 1
  fi
}
