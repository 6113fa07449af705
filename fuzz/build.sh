#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds the sanitizer artifacts of `npm run fuzz` with Debian's clang (clang-14 and
# libclang-rt-14-dev on Debian 12; scripts/setup-system.sh installs them). Never touches
# build/Release, which the rest of the project uses:
#
#   build/fuzz/lba_status_fuzzer   libFuzzer target over native/lba_status.cc
#                                  (-fsanitize=fuzzer,address,undefined)
#   build/asan/lba_status.node     the whole addon (every native/*.cc, as binding.gyp builds on
#                                  Linux) with -fsanitize=address,undefined, linked against the
#                                  shared ASan runtime: node itself is not instrumented, so the
#                                  runtime must be LD_PRELOADed (path printed as ASAN_RUNTIME=...)
#
# Usage: bash fuzz/build.sh [fuzzer|addon|all]   (default all)
# Env:   CXX_FUZZ  the clang++ to use (default: clang++, else the newest clang++-NN on PATH)
# Prints KEY=VALUE lines on stdout (FUZZER=, ADDON=, ASAN_RUNTIME=, SYMBOLIZER=) for
# scripts/fuzz.mjs; diagnostics go to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
what=${1:-all}

find_clang() {
  if [ -n "${CXX_FUZZ:-}" ]; then echo "$CXX_FUZZ"; return; fi
  if command -v clang++ >/dev/null; then echo clang++; return; fi
  local v
  for v in 20 19 18 17 16 15 14 13; do
    if command -v "clang++-$v" >/dev/null; then echo "clang++-$v"; return; fi
  done
  echo "fuzz/build.sh: no clang++ found: install clang-14 and libclang-rt-14-dev" \
    "(bash scripts/setup-system.sh as root)" >&2
  exit 1
}
CXX=$(find_clang)
RUNTIME=$("$CXX" -print-file-name=libclang_rt.asan-x86_64.so)
if [ ! -f "$RUNTIME" ]; then
  echo "fuzz/build.sh: $CXX has no ASan runtime ($RUNTIME): install libclang-rt-NN-dev" >&2
  exit 1
fi
# llvm-symbolizer next to this clang (llvm-NN), for readable ASan stack traces.
SYMBOLIZER=$(dirname "$(readlink -f "$(command -v "$CXX")")")/llvm-symbolizer
[ -x "$SYMBOLIZER" ] || SYMBOLIZER=$(command -v llvm-symbolizer || true)

COMMON=(-std=c++17 -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Werror -Inative)
# UBSan findings abort like ASan's instead of printing and going on.
SAN_FLAGS=(-fno-sanitize-recover=all)

# Rebuild only when an input is newer than the output.
stale() {
  local out=$1
  shift
  [ -f "$out" ] || return 0
  local f
  for f in "$@"; do [ "$f" -nt "$out" ] && return 0; done
  return 1
}

if [ "$what" = all ] || [ "$what" = fuzzer ]; then
  mkdir -p build/fuzz
  out=build/fuzz/lba_status_fuzzer
  srcs=(fuzz/native/lba_status_fuzzer.cc native/lba_status.cc)
  if stale "$out" "${srcs[@]}" native/lba_status.h fuzz/build.sh; then
    echo "fuzz/build.sh: $CXX -fsanitize=fuzzer,address,undefined -> $out" >&2
    "$CXX" "${COMMON[@]}" -fsanitize=fuzzer,address,undefined "${SAN_FLAGS[@]}" \
      "${srcs[@]}" -o "$out"
  fi
  echo "FUZZER=$PWD/$out"
fi

if [ "$what" = all ] || [ "$what" = addon ]; then
  mkdir -p build/asan
  out=build/asan/lba_status.node
  node_inc=$(node -p "require('path').join(process.execPath, '../../include/node')")
  if [ ! -f "$node_inc/node_api.h" ]; then
    node_inc=$(ls -d "$HOME"/.cache/node-gyp/"$(node -p 'process.versions.node')"/include/node \
      2>/dev/null || true)
  fi
  [ -f "$node_inc/node_api.h" ] || {
    echo "fuzz/build.sh: node headers not found (run npm run build:native once)" >&2
    exit 1
  }
  addon_inc=$(node -p "require('node-addon-api').include_dir")
  srcs=(native/*.cc)
  if stale "$out" "${srcs[@]}" native/*.h fuzz/build.sh; then
    echo "fuzz/build.sh: $CXX -fsanitize=address,undefined -shared-libasan -> $out" >&2
    # The defines binding.gyp gives node-gyp (and node-addon-api's except.gypi).
    "$CXX" "${COMMON[@]}" -fsanitize=address,undefined "${SAN_FLAGS[@]}" -shared-libasan \
      -fPIC -shared -pthread -fexceptions -fvisibility=hidden \
      -isystem "$node_inc" -isystem "$addon_inc" \
      -DNAPI_VERSION=8 -DNODE_ADDON_API_DISABLE_DEPRECATED \
      -DNODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS -DNAPI_CPP_EXCEPTIONS -DBUILDING_NODE_EXTENSION \
      "${srcs[@]}" -o "$out"
  fi
  echo "ADDON=$PWD/$out"
fi

echo "ASAN_RUNTIME=$RUNTIME"
echo "SYMBOLIZER=$SYMBOLIZER"
