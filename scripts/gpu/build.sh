#!/usr/bin/env bash
# Builds dtrainer's GPU path (CUDA LibTorch + NCCL) on a GPU machine that has PyTorch, the
# nvidia-nccl-cu13 wheel and nvcc but neither Debian's archive nor its packages — the lent
# H100/H200 machines. One command, repeatable in a fresh machine:
#
#   scripts/gpu/build.sh            # -> build-gpu/ and build-gpu/env.sh
#   source build-gpu/env.sh && ctest --test-dir build-gpu --output-on-failure -j 8
#
#   LibTorch  from the python3 that imports torch (torch.utils.cmake_prefix_path)
#   NCCL      from the nvidia-nccl-cu13 wheel's folder (site-packages/nvidia/nccl)
#   CUDA      /usr/local/cuda (CUDAToolkit_ROOT to override)
#   the rest  Open MPI, parallel HDF5, Kokkos, spdlog, CLI11, JSON, Catch2, libpng: Debian
#             bookworm .debs (scripts/gpu/debs.txt, downloaded beforehand by fetch_debs.sh into
#             .device/debs and carried along), unpacked with `dpkg -x` into $DT_DEPS, never into /.
#             Libraries the machine already has are dropped from the prefix again, so the
#             machine's own zlib, OpenSSL, ... stay in use; Open MPI is relocated with OPAL_PREFIX.
# fitlaws (Ceres, librsvg) is CPU-only and left out (DT_BUILD_ANALYSIS=OFF).
#
# Environment: DT_DEBS (default .device/debs), DT_DEPS (default /opt/dtdeps), DT_GPU_BUILD
# (default build-gpu), PYTHON (default python3), DT_JOBS (default: all cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
debs=${DT_DEBS:-$root/.device/debs}
deps=${DT_DEPS:-/opt/dtdeps}
build=${DT_GPU_BUILD:-$root/build-gpu}
py=${PYTHON:-python3}
jobs=${DT_JOBS:-$(nproc)}
say() { echo "build.sh: $*"; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

# --- What the machine provides
# (DT_TORCH_CMAKE / DT_NCCL_ROOT override the python lookups.)
torch_cmake=${DT_TORCH_CMAKE:-$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')} || die "$py cannot import torch (set PYTHON)"
torch_info=$("$py" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null || echo "(version unknown)")
nccl_root=${DT_NCCL_ROOT:-$("$py" -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null)} ||
  die "the nvidia-nccl-cu13 wheel is not importable by $py (nvidia.nccl)"
[ -f "$nccl_root/include/nccl.h" ] || die "no include/nccl.h under $nccl_root"
cuda_root=${CUDAToolkit_ROOT:-/usr/local/cuda}
[ -x "$cuda_root/bin/nvcc" ] || die "no nvcc in $cuda_root/bin (set CUDAToolkit_ROOT)"
say "torch $torch_info ($torch_cmake); NCCL $nccl_root; CUDA $cuda_root"

# --- The Debian packages, unpacked into the prefix (once per prefix)
P=$deps/usr
if [ ! -f "$deps/.unpacked" ]; then
  ls "$debs"/*.deb > /dev/null 2>&1 || die "no .deb files in $debs: run scripts/gpu/fetch_debs.sh where Debian's archive is reachable, and carry .device"
  mkdir -p "$deps"
  for f in "$debs"/*.deb; do dpkg -x "$f" "$deps"; done
  # Absolute links (/usr/lib/...) would point at the machine's files: point them into the prefix.
  find "$deps" -type l | while read -r l; do
    t=$(readlink "$l")
    case "$t" in /*) if [ -e "$deps$t" ]; then ln -sfn "$deps$t" "$l"; fi ;; esac
  done
  # Runtime libraries the machine already has: use the machine's (drop ours, re-point dev links).
  dropped=""
  for so in libz.so.1 libssl.so.3 libcrypto.so.3 libcurl.so.4 libnghttp2.so.14 libidn2.so.0 librtmp.so.1 libssh2.so.1 \
            libpsl.so.5 libgssapi_krb5.so.2 libkrb5.so.3 libk5crypto.so.3 libkrb5support.so.0 libkeyutils.so.1 \
            libcom_err.so.2 libldap-2.5.so.0 liblber-2.5.so.0 libsasl2.so.2 libbrotlicommon.so.1 libbrotlidec.so.1 \
            libbrotlienc.so.1 libzstd.so.1 libgnutls.so.30 libhogweed.so.6 libnettle.so.8 libgmp.so.10 libp11-kit.so.0 \
            libtasn1.so.6 libunistring.so.2 libffi.so.8 libdb-5.3.so libudev.so.1 liblzma.so.5 libgfortran.so.5 \
            libquadmath.so.0 libltdl.so.7 libnuma.so.1 libpng16.so.16; do
    sys=$(ldconfig -p | awk -v s="$so" '$1 == s && /x86-64/ && !found {print $NF; found = 1}')
    [ -n "$sys" ] || continue
    for dir in "$deps/lib/x86_64-linux-gnu" "$P/lib/x86_64-linux-gnu"; do
      [ -e "$dir/$so" ] || [ -L "$dir/$so" ] || continue
      real=$(readlink -f "$dir/$so")
      rm -f "$dir/$so" "$real"
      dev="$P/lib/x86_64-linux-gnu/${so%%.so*}.so"
      if [ -L "$dev" ]; then ln -sfn "$sys" "$dev"; fi
      dropped="$dropped ${so%%.so*}"
    done
  done
  say "using the machine's own:$dropped"
  # Debian's alternatives, by hand; h5pcc knows its prefix.
  for t in mpirun mpiexec mpicc mpicxx mpic++; do ln -sfn "$t.openmpi" "$P/bin/$t"; done
  ln -sfn orterun "$P/bin/mpirun.openmpi"
  ln -sfn orterun "$P/bin/mpiexec.openmpi"
  ln -sfn h5pcc.openmpi "$P/bin/h5pcc"
  sed -i "s|^prefix=\"/usr\"|prefix=\"$P\"|" "$P/bin/h5pcc.openmpi"
  touch "$deps/.unpacked"
fi

# --- The environment every later command needs (written for `source`)
mkdir -p "$build"
cat > "$build/env.sh" <<ENV
# Written by scripts/gpu/build.sh: the unpacked Debian prefix ($deps) for builds and runs.
export OPAL_PREFIX=$P
export PMIX_MCA_pcompress_base_silence_warning=1
# PMIx looks for its plugins at Debian's absolute path, where the machine may have its own PMIx's.
export PMIX_MCA_mca_base_component_path=$P/lib/x86_64-linux-gnu/pmix2/lib/pmix
export PATH=$P/bin:\$PATH
export LD_LIBRARY_PATH=$P/lib/x86_64-linux-gnu:$deps/lib/x86_64-linux-gnu:$P/lib/x86_64-linux-gnu/openmpi/lib:$P/lib/x86_64-linux-gnu/hdf5/openmpi:$P/lib/x86_64-linux-gnu/pmix2/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ENV
# shellcheck disable=SC1091
source "$build/env.sh"
mpirun --version | head -1 | sed 's/^/build.sh: /'

# --- Configure and build
# (pkg-config: jemalloc.pc from the prefix, its /usr paths re-rooted into it. The BLAS is the one
# PyTorch's wheel brings, so DT_BLAS_THREADS=system.)
export PKG_CONFIG_PATH=$P/lib/x86_64-linux-gnu/pkgconfig PKG_CONFIG_SYSROOT_DIR=$deps
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$P;$torch_cmake" -DCMAKE_LIBRARY_PATH="$P/lib/x86_64-linux-gnu;$deps/lib/x86_64-linux-gnu" \
  -DCMAKE_INCLUDE_PATH="$P/include" \
  -DDT_NCCL=ON -DNCCL_ROOT="$nccl_root" -DCUDAToolkit_ROOT="$cuda_root" -DCMAKE_CUDA_COMPILER="$cuda_root/bin/nvcc" \
  -DTORCH_CUDA_ARCH_LIST=9.0 -DDT_BUILD_ANALYSIS=OFF -DDT_USE_CCACHE=OFF \
  -DMPI_C_COMPILER="$P/bin/mpicc" -DMPI_CXX_COMPILER="$P/bin/mpicxx" -DMPIEXEC_EXECUTABLE="$P/bin/mpirun" \
  -DHDF5_C_COMPILER_EXECUTABLE="$P/bin/h5pcc" -DKokkos_DIR="$P/lib/x86_64-linux-gnu/cmake/Kokkos" \
  -DDT_SHARED_DIR="$root/shared" \
  -DDT_BLAS_THREADS=system
if [ "${DT_CONFIGURE_ONLY:-0}" = 1 ]; then exit 0; fi
cmake --build "$build" -j "$jobs"
say "built $build (source $build/env.sh before running its programs)"
