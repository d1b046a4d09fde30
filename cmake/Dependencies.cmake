# Finds every dependency of dtrainer. A missing one stops configure with the Debian package that
# provides it; scripts/bootstrap.sh installs all of them.
#
# Results:
#   Torch (TORCH_LIBRARIES), MPI::MPI_CXX, dt::hdf5 (parallel HDF5), dt::kokkos, CLI11::CLI11,
#   Catch2::Catch2, nlohmann_json::nlohmann_json, spdlog::spdlog, Ceres::ceres, PNG::PNG
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

# --- NCCL: only looked for when LibTorch has CUDA. NCCL_ROOT may point at the nvidia-nccl-cu13
#     Python package's folder (…/site-packages/nvidia/nccl).
set(DT_WITH_CUDA OFF)
if(DT_TORCH_CUDA)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT} ENV NCCL_ROOT PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${NCCL_ROOT} ENV NCCL_ROOT PATH_SUFFIXES lib lib64)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(DT_WITH_CUDA ON)
    add_library(dt::nccl INTERFACE IMPORTED)
    target_include_directories(dt::nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(dt::nccl INTERFACE ${NCCL_LIBRARY})
    dt_found("NCCL" "${NCCL_LIBRARY}")
  else()
    dt_found("NCCL" "not found (set NCCL_ROOT) -> GPU communicator not built")
  endif()
else()
  dt_found("NCCL" "not searched (LibTorch has no CUDA)")
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
target_link_libraries(dt::hdf5 INTERFACE ${HDF5_C_LIBRARIES} MPI::MPI_CXX)
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
dt_require(Eigen3 libeigen3-dev CONFIG)
dt_require(Ceres libceres-dev CONFIG)
dt_require(PNG libpng-dev)
if(DT_BUILD_TESTS)
  dt_require(Catch2 catch2 CONFIG)
endif()

function(dt_print_summary)
  message(STATUS "")
  message(STATUS "dtrainer ${PROJECT_VERSION} (${CMAKE_BUILD_TYPE}) found:")
  foreach(line IN LISTS DT_FOUND_SUMMARY)
    message(STATUS "${line}")
  endforeach()
  if(DT_WITH_CUDA)
    message(STATUS "dtrainer will build: CPU path + CUDA/NCCL path")
  else()
    message(STATUS "dtrainer will build: CPU path only (GPU path needs CUDA-enabled LibTorch and NCCL)")
  endif()
  if(DT_CCACHE)
    message(STATUS "  compiler launcher: ccache (${DT_CCACHE})")
  endif()
  message(STATUS "")
endfunction()
