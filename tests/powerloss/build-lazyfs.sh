#!/usr/bin/env bash
# Builds LazyFS (https://github.com/dsrhaslab/lazyfs) against Debian's
# libfuse3-dev, libtoml11-dev and libspdlog-dev instead of the FetchContent
# downloads its CMake files do (no internet is assumed beyond the package
# registries). Usage: build-lazyfs.sh SRC_DIR ; prints the path of the binary.
# SRC_DIR is a LazyFS work tree; it is patched in place (idempotent).
set -euo pipefail
src=${1:?usage: build-lazyfs.sh LAZYFS_SRC}

pkgs=(libfuse3-dev fuse3 libtoml11-dev libspdlog-dev cmake g++ pkg-config)
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "build-lazyfs: installing ${missing[*]}" >&2
    apt-get update >&2 && apt-get install -y "${missing[@]}" >&2
fi

pc=$src/libs/libpcache/CMakeLists.txt
lz=$src/lazyfs/CMakeLists.txt
# libpcache: the FetchContent block (toml11 v3.7.1, spdlog v1.10.0) becomes
# find_package of the same versions as Debian 12 ships them.
if grep -q FetchContent "$pc"; then
    perl -0pi -e 's/include\(FetchContent\).*?FetchContent_MakeAvailable\(spdlog\)\n/find_package(toml11 REQUIRED)\nfind_package(spdlog REQUIRED)\n/s;
                  s/set_target_properties\(spdlog PROPERTIES POSITION_INDEPENDENT_CODE ON\)\n//;
                  s/target_link_libraries\(pcache toml11::toml11 spdlog\)/target_link_libraries(pcache toml11::toml11 spdlog::spdlog)/' "$pc"
fi
# lazyfs: link spdlog from the system (it included the downloaded copy's
# headers) and never fetch googletest.
if ! grep -q 'find_package(spdlog' "$lz"; then
    perl -0pi -e 's/find_package\(Threads REQUIRED\)/find_package(Threads REQUIRED)\nfind_package(spdlog REQUIRED)/;
                  s/target_link_libraries\(\$\{CMAKE_PROJECT_NAME\} fuse3 Threads::Threads libpcache.so\)/target_link_libraries(\${CMAKE_PROJECT_NAME} fuse3 Threads::Threads libpcache.so spdlog::spdlog)/;
                  s/option\(LAZYFS_BUILD_TESTS "Build LazyFS unit tests" ON\)/option(LAZYFS_BUILD_TESTS "Build LazyFS unit tests" OFF)/' "$lz"
fi

jobs=$(nproc)
(cd "$src/libs/libpcache" && mkdir -p build && cd build && cmake -DCMAKE_BUILD_TYPE=Release .. >&2 && cmake --build . -j"$jobs" >&2)
(cd "$src/lazyfs" && mkdir -p build && cd build && cmake -DCMAKE_BUILD_TYPE=Release -DLAZYFS_BUILD_TESTS=OFF .. >&2 && cmake --build . -j"$jobs" >&2)
echo "$src/lazyfs/build/lazyfs"
