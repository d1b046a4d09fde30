#!/usr/bin/env bash
# bootstrap.sh — install dtrainer's dependencies from Debian packages, configure and build.
#
#   scripts/bootstrap.sh            install (if needed) + configure + build  (build dir: build/)
#   scripts/bootstrap.sh --deps     only install the Debian packages
#   scripts/bootstrap.sh --no-deps  only configure + build (dependencies already present)
#
# Non-interactive and idempotent: packages already installed are not touched, so a second run
# goes straight to the (ccache-accelerated, incremental) build.
# Environment: BUILD_DIR (default build), BUILD_TYPE (default Release), DT_JOBS (default nproc).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$here/build}
build_type=${BUILD_TYPE:-Release}
jobs=${DT_JOBS:-$(nproc)}

do_deps=1
do_build=1
for arg in "$@"; do
  case "$arg" in
    --deps) do_build=0 ;;
    --no-deps) do_deps=0 ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bootstrap.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

# Every package the CPU build, its tests and its tools need. Keep in sync with cmake/Dependencies.cmake.
packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev                       # LibTorch C++ frontend (CPU)
  libopenblas0-pthread               # fast BLAS behind LibTorch's matmuls (ATLAS is ~4x slower)
  libopenblas0-openmp                # ...on OpenMP, LibTorch's own thread pool (cmake/ProgramRuntime.cmake)
  libjemalloc-dev                    # every program's allocator (cmake/ProgramRuntime.cmake)
  libopenmpi-dev openmpi-bin         # MPI runtime + mpirun
  libhdf5-openmpi-dev                # parallel HDF5
  libtrilinos-kokkos-dev             # Kokkos host kernels
  catch2 libcli11-dev nlohmann-json3-dev libspdlog-dev
  libtomlplusplus-dev zlib1g-dev     # job files (TOML), checkpoint checksums
  libceres-dev libeigen3-dev libpng-dev
  libicu-dev libjpeg-dev             # CLIP's tokenizer (Unicode); JPEG images for dtdata encode
  librsvg2-dev libcairo2-dev         # fitlaws --plot FILE.png (the SVG rendered by librsvg)
  python3 python3-numpy python3-h5py # independent references: numpy maths, h5py-written shards,
  python3-protobuf                   # ...and TensorBoard event files decoded by protobuf's own library
)

if (( do_deps )); then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  if (( ${#missing[@]} )); then
    echo "bootstrap: installing ${#missing[@]} Debian package(s): ${missing[*]}"
    sudo=""
    if (( EUID != 0 )); then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "bootstrap: all ${#packages[@]} Debian packages already installed"
  fi
fi

if (( do_build )); then
  cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type"
  cmake --build "$build_dir" -j "$jobs"
fi
