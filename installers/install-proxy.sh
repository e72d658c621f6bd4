#!/usr/bin/env bash
# Builds flowlink-proxy from this checkout and installs it into PREFIX/bin (default ~/.local),
# then says how to wrap an editor's MCP servers.
#
#   installers/install-proxy.sh               # ~/.local/bin/flowlink-proxy
#   PREFIX=/usr/local installers/install-proxy.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${PREFIX:-$HOME/.local}"

command -v cargo >/dev/null 2>&1 || {
    echo "install-proxy: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
}

cargo install --locked --path "$root/flowlink-proxy" --root "$prefix"
bin="$prefix/bin/flowlink-proxy"
"$bin" --version

case ":$PATH:" in
    *":$prefix/bin:"*) ;;
    *) echo "note: $prefix/bin is not on PATH; add it, or editors will not find flowlink-proxy" >&2 ;;
esac

cat <<EOF

Installed $bin.
Next, wrap your editor's MCP servers (a backup is kept; --dry-run shows the change first):
  $bin install --client claude-code --dry-run
  $bin install --client claude-code        # or cursor, windsurf, vscode
EOF
