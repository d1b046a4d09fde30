# Finds every dependency of dtrainer. A missing one stops configure with the Debian package that
# provides it; scripts/bootstrap.sh installs all of them.
#
# Results:
#   Torch (TORCH_LIBRARIES), MPI::MPI_CXX, dt::hdf5 (parallel HDF5), dt::kokkos, CLI11::CLI11,
#   Catch2::Catch2, nlohmann_json::nlohmann_json, spdlog::spdlog, Ceres::ceres, PNG::PNG, ZLIB::ZLIB,
#   tomlplusplus::tomlplusplus, ICU::uc, ICU::i18n, JPEG::JPEG
#   DT_WITH_NCCL: ON when the NCCL communicator is built (see DT_NCCL below).
#   DT_WITH_CUDA: ON when LibTorch was built with CUDA *and* NCCL was found (GPU code is compiled).

set(DT_FOUND_SUMMARY "")
macro(dt_found what detail)
  list(APPEND DT_FOUND_SUMMARY "  ${what}: ${detail}")
endmacro()

function(dt_missing what debian_package)
  message(FATAL_ERROR
    "dtrainer: ${what} not found.\n"
    "  Install it with:  apt-get install ${debian_package}\n"
    "  (or run scripts/bootstrap.sh, which installs every dependency)")
endfunction()

# --- LibTorch (Debian: /usr/lib/x86_64-linux-gnu/cmake/Torch; elsewhere pass -DTorch_DIR or
#     CMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')).
find_package(Torch QUIET)
if(NOT Torch_FOUND)
  dt_missing("LibTorch (TorchConfig.cmake)" "libtorch-dev")
endif()
# TorchConfig puts its flags (e.g. the C++ ABI define) into TORCH_CXX_FLAGS.
separate_arguments(DT_TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")
add_library(dt_torch INTERFACE)
target_link_libraries(dt_torch INTERFACE ${TORCH_LIBRARIES})
target_compile_options(dt_torch INTERFACE ${DT_TORCH_CXX_FLAGS})
if(TORCH_CUDA_LIBRARIES)
  set(DT_TORCH_CUDA ON)
  dt_found("LibTorch" "${Torch_DIR} (CUDA-enabled)")
else()
  set(DT_TORCH_CUDA OFF)
  dt_found("LibTorch" "${Torch_DIR} (CPU only)")
endif()

# --- NCCL and the CUDA runtime, for the NCCL communicator (src/parallel/nccl_communicator.cpp).
#     DT_NCCL=AUTO builds it when LibTorch has CUDA and NCCL is found; ON requires it (with a
#     CPU-only LibTorch that is a compile-and-link check of the backend: CUDA tensors cannot exist
#     there, so its tests skip); OFF never builds it. NCCL_ROOT may point at the nvidia-nccl-cu13
#     Python package's folder (.../site-packages/nvidia/nccl); CUDA comes from CUDAToolkit_ROOT,
#     nvcc on PATH or /usr/local/cuda.
set(DT_NCCL "AUTO" CACHE STRING "Build the NCCL communicator: AUTO (with CUDA-enabled LibTorch), ON (require it), OFF")
set_property(CACHE DT_NCCL PROPERTY STRINGS AUTO ON OFF)
set(DT_WITH_NCCL OFF)
if(DT_NCCL STREQUAL "ON" OR (DT_NCCL STREQUAL "AUTO" AND DT_TORCH_CUDA))
  find_package(CUDAToolkit QUIET)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT} ENV NCCL_ROOT ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${NCCL_ROOT} ENV NCCL_ROOT ${CUDAToolkit_LIBRARY_DIR}
               PATH_SUFFIXES lib lib64)
  if(CUDAToolkit_FOUND AND NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(DT_WITH_NCCL ON)
    add_library(dt::nccl INTERFACE IMPORTED)
    target_include_directories(dt::nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(dt::nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
    dt_found("NCCL" "${NCCL_LIBRARY} (CUDA runtime ${CUDAToolkit_VERSION})")
  elseif(DT_NCCL STREQUAL "ON")
    message(FATAL_ERROR "dtrainer: DT_NCCL=ON but the CUDA runtime (found: ${CUDAToolkit_FOUND}) or NCCL "
                        "(nccl.h: ${NCCL_INCLUDE_DIR}, library: ${NCCL_LIBRARY}) is missing.\n"
                        "  Point -DCUDAToolkit_ROOT at the CUDA toolkit and -DNCCL_ROOT at NCCL "
                        "(e.g. site-packages/nvidia/nccl of the nvidia-nccl-cu13 wheel).")
  else()
    dt_found("NCCL" "not found (set NCCL_ROOT) -> NCCL communicator not built")
  endif()
else()
  dt_found("NCCL" "not searched (DT_NCCL=${DT_NCCL}, LibTorch CUDA: ${DT_TORCH_CUDA})")
endif()
# The CUDA training path (device code, CUDA tensors) needs both.
if(DT_TORCH_CUDA AND DT_WITH_NCCL)
  set(DT_WITH_CUDA ON)
else()
  set(DT_WITH_CUDA OFF)
endif()

# --- MPI (Open MPI)
find_package(MPI QUIET COMPONENTS CXX)
if(NOT MPI_CXX_FOUND)
  dt_missing("MPI (C++ bindings)" "libopenmpi-dev openmpi-bin")
endif()
if(NOT MPIEXEC_EXECUTABLE)
  dt_missing("mpirun" "openmpi-bin")
endif()
execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE DT_MPIEXEC_VERSION ERROR_QUIET)
string(REGEX REPLACE "\n.*" "" DT_MPIEXEC_VERSION "${DT_MPIEXEC_VERSION}")
dt_found("MPI" "MPI ${MPI_CXX_VERSION}, ${MPIEXEC_EXECUTABLE} (${DT_MPIEXEC_VERSION})")

# --- Parallel HDF5 (Debian: libhdf5-openmpi-dev, found through its h5pcc wrapper)
set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 QUIET COMPONENTS C)
if(NOT HDF5_FOUND)
  dt_missing("HDF5" "libhdf5-openmpi-dev")
endif()
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "dtrainer: found HDF5 ${HDF5_VERSION} without MPI support (${HDF5_C_INCLUDE_DIRS}).\n"
                      "  Install the parallel build:  apt-get install libhdf5-openmpi-dev")
endif()
add_library(dt::hdf5 INTERFACE IMPORTED)
target_include_directories(dt::hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS})
# Only the HDF5 libraries themselves: h5pcc also lists what libhdf5 links (curl, crypto, sz, z),
# which the shared library brings along and whose -dev links a machine may not have.
set(DT_HDF5_LIBS "")
foreach(lib IN LISTS HDF5_C_LIBRARIES)
  if(lib MATCHES "hdf5")
    list(APPEND DT_HDF5_LIBS ${lib})
  endif()
endforeach()
target_link_libraries(dt::hdf5 INTERFACE ${DT_HDF5_LIBS} MPI::MPI_CXX)
target_compile_definitions(dt::hdf5 INTERFACE ${HDF5_C_DEFINITIONS})
dt_found("HDF5" "${HDF5_VERSION} (parallel)")

# --- Kokkos. Debian's Trilinos build exports targets whose include dir is the non-existent
#     /usr/lib/include; we wrap the libraries in our own target with the real header folder.
find_package(Kokkos QUIET)
if(NOT Kokkos_FOUND)
  dt_missing("Kokkos" "libtrilinos-kokkos-dev")
endif()
find_path(DT_KOKKOS_INCLUDE_DIR Kokkos_Core.hpp
          HINTS ${Kokkos_INCLUDE_DIRS} /usr/include/trilinos NO_DEFAULT_PATH)
if(NOT DT_KOKKOS_INCLUDE_DIR)
  dt_missing("Kokkos headers (Kokkos_Core.hpp)" "libtrilinos-kokkos-dev")
endif()
set(DT_KOKKOS_LIBS "")
foreach(lib IN LISTS Kokkos_LIBRARIES)
  find_library(DT_KOKKOS_LIB_${lib} NAMES ${lib})
  if(NOT DT_KOKKOS_LIB_${lib})
    dt_missing("Kokkos library ${lib}" "libtrilinos-kokkos-dev")
  endif()
  list(APPEND DT_KOKKOS_LIBS ${DT_KOKKOS_LIB_${lib}})
endforeach()
add_library(dt::kokkos INTERFACE IMPORTED)
target_include_directories(dt::kokkos SYSTEM INTERFACE ${DT_KOKKOS_INCLUDE_DIR})
target_link_libraries(dt::kokkos INTERFACE ${DT_KOKKOS_LIBS} ${CMAKE_DL_LIBS})
dt_found("Kokkos" "${Kokkos_VERSION} (headers ${DT_KOKKOS_INCLUDE_DIR})")

# --- Header and small libraries
macro(dt_require package debian_package)
  find_package(${package} QUIET ${ARGN})
  if(NOT ${package}_FOUND)
    dt_missing("${package}" "${debian_package}")
  endif()
  if(DEFINED ${package}_VERSION_STRING)
    dt_found("${package}" "${${package}_VERSION_STRING}")
  else()
    dt_found("${package}" "${${package}_VERSION}")
  endif()
endmacro()
dt_require(CLI11 libcli11-dev CONFIG)
dt_require(nlohmann_json nlohmann-json3-dev CONFIG)
dt_require(spdlog libspdlog-dev CONFIG)
dt_require(PNG libpng-dev)
dt_require(ZLIB zlib1g-dev)                   # checkpoint checksums (CRC-32)
dt_require(tomlplusplus libtomlplusplus-dev CONFIG)  # job files: a real TOML parser (file:line:column errors)
dt_require(ICU libicu-dev COMPONENTS uc i18n)  # CLIP's tokenizer: NFC, Unicode case and letter classes
dt_require(JPEG libjpeg-dev)                  # dtdata encode reads JPEG images
if(DT_BUILD_ANALYSIS)  # fitlaws only
  dt_require(Eigen3 libeigen3-dev CONFIG)
  dt_require(Ceres libceres-dev CONFIG)
  find_package(PkgConfig QUIET)
  if(NOT PkgConfig_FOUND)
    dt_missing("pkg-config" "pkg-config")
  endif()
  pkg_check_modules(DT_RSVG QUIET IMPORTED_TARGET librsvg-2.0 cairo)
  if(NOT DT_RSVG_FOUND)
    dt_missing("librsvg and cairo (PNG plots)" "librsvg2-dev libcairo2-dev")
  endif()
  dt_found("librsvg/cairo" "${DT_RSVG_librsvg-2.0_VERSION} / ${DT_RSVG_cairo_VERSION}")
else()
  dt_found("fitlaws" "not built (DT_BUILD_ANALYSIS=OFF)")
endif()
if(DT_BUILD_TESTS)
  dt_require(Catch2 catch2 CONFIG)
  # Tests compare against independent numpy / h5py / protobuf references. Debian's packages belong to /usr/bin/python3,
  # which a python3 earlier on PATH (pyenv, venv) may not see: take the first that imports numpy.
  set(DT_NUMPY_PYTHON "")
  foreach(candidate /usr/bin/python3 python3)
    find_program(_dt_py NAMES ${candidate} NO_CACHE)
    if(_dt_py)
      execute_process(COMMAND ${_dt_py} -c "import numpy, h5py, google.protobuf" RESULT_VARIABLE _dt_rc OUTPUT_QUIET ERROR_QUIET)
      if(_dt_rc EQUAL 0)
        set(DT_NUMPY_PYTHON ${_dt_py})
        break()
      endif()
    endif()
    unset(_dt_py)
  endforeach()
  if(NOT DT_NUMPY_PYTHON)
    dt_missing("a python3 with numpy, h5py and protobuf (the tests' independent references)" "python3-numpy python3-h5py python3-protobuf")
  endif()
  dt_found("numpy/h5py/protobuf python" "${DT_NUMPY_PYTHON}")
  # Reference data the tests reproduce (shared/data, beside the checkout in CI and sessions).
  if(NOT DT_SHARED_DIR AND DEFINED ENV{DT_SHARED_DIR})
    set(DT_SHARED_DIR "$ENV{DT_SHARED_DIR}")
  endif()
  set(DT_SHARED_DIR "${DT_SHARED_DIR}" CACHE PATH "Folder holding shared/data (reference data for the tests)")
  if(NOT DT_SHARED_DIR)
    get_filename_component(DT_SHARED_DIR "${PROJECT_SOURCE_DIR}/../shared" ABSOLUTE)
  endif()
  if(DT_BUILD_ANALYSIS AND EXISTS "${DT_SHARED_DIR}/data/chinchilla_svg_extracted_data.csv")
    dt_found("reference data" "${DT_SHARED_DIR}/data")
  elseif(DT_BUILD_ANALYSIS)  # (only fitlaws' tests read it)
    message(WARNING "dtrainer: reference data not found in ${DT_SHARED_DIR}/data: the fitlaws reproduction tests "
                    "will fail. Point -DDT_SHARED_DIR (or the DT_SHARED_DIR environment variable) at the shared/ folder.")
  endif()
endif()

function(dt_print_summary)
  message(STATUS "")
  message(STATUS "dtrainer ${PROJECT_VERSION} (${CMAKE_BUILD_TYPE}) found:")
  foreach(line IN LISTS DT_FOUND_SUMMARY)
    message(STATUS "${line}")
  endforeach()
  if(DT_WITH_CUDA)
    message(STATUS "dtrainer will build: CPU path + CUDA/NCCL path")
  elseif(DT_WITH_NCCL)
    message(STATUS "dtrainer will build: CPU path + the NCCL communicator (compile check: LibTorch has no CUDA)")
  else()
    message(STATUS "dtrainer will build: CPU path only (GPU path needs CUDA-enabled LibTorch and NCCL)")
  endif()
  if(DT_CCACHE)
    message(STATUS "  compiler launcher: ccache (${DT_CCACHE})")
  endif()
  message(STATUS "")
endfunction()
