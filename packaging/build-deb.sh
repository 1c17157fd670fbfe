#!/usr/bin/env bash
# Builds the Debian package: the release binary, its man page (one page,
# with a section per command) and its completions (generated from the
# binary itself), then `cargo deb`.
#
#   bash packaging/build-deb.sh    # target/debian/hacfg_<version>-1_<arch>.deb (cargo-deb adds
#                                  # the Debian revision -1), e.g. hacfg_0.1.0-1_amd64.deb
#
# Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin=target/release/hacfg
mkdir -p target/assets
"$bin" man | gzip -9n > target/assets/hacfg.1.gz
"$bin" completions bash > target/assets/hacfg.bash
"$bin" completions zsh > target/assets/_hacfg
"$bin" completions fish > target/assets/hacfg.fish
cargo deb --no-build --no-strip --quiet
ls target/debian/*.deb
