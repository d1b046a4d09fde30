# What every dtrainer program runs on, chosen in this one place: the allocator and the BLAS's
# threading. dt_program_runtime(TARGET) applies both to an executable (tools, tests); libraries never
# change process-wide state. bench/RESULTS.md ("CPU training step") has the measurements behind the
# defaults.
#
# The allocator (settings in src/core/allocator_settings.cpp; include/dtrainer/core/allocator.h):
#   -DDT_ALLOCATOR=jemalloc   (default) Debian libjemalloc-dev
#   -DDT_ALLOCATOR=mimalloc   Debian libmimalloc-dev
#   -DDT_ALLOCATOR=system     glibc malloc, with large blocks kept on the heap
#
# The BLAS's threads:
#   -DDT_BLAS_THREADS=openmp  (default) OpenBLAS built on OpenMP (Debian libopenblas0-openmp), found
#                             through the programs' RPATH whatever the system's libblas.so.3
#                             alternative is. Its threads are LibTorch's own OpenMP pool, so a step
#                             that alternates matmuls (BLAS) and element-wise ops (LibTorch's OpenMP)
#                             runs on one set of threads; with the pthread OpenBLAS the two pools spin
#                             against each other (measured with 2 threads on 2 cores: 842 ms vs 306 ms
#                             per step of the 8.17 M UNet).
#   -DDT_BLAS_THREADS=system  whatever libblas.so.3 the system's alternatives select.

set(DT_ALLOCATOR "jemalloc" CACHE STRING "malloc of every dtrainer program: jemalloc | mimalloc | system")
set_property(CACHE DT_ALLOCATOR PROPERTY STRINGS jemalloc mimalloc system)

add_library(dtrainer_allocator OBJECT ${PROJECT_SOURCE_DIR}/src/core/allocator_settings.cpp)
target_include_directories(dtrainer_allocator PUBLIC ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(dtrainer_allocator PRIVATE dt_warnings)
if(DT_ALLOCATOR STREQUAL "jemalloc")
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(JEMALLOC QUIET IMPORTED_TARGET jemalloc)
  endif()
  if(NOT JEMALLOC_FOUND)
    dt_missing("jemalloc (jemalloc.pc; DT_ALLOCATOR=jemalloc)" "libjemalloc-dev")
  endif()
  target_compile_definitions(dtrainer_allocator PRIVATE DT_ALLOCATOR_JEMALLOC)
  target_link_libraries(dtrainer_allocator PUBLIC PkgConfig::JEMALLOC)
  dt_found("allocator" "jemalloc ${JEMALLOC_VERSION} (${JEMALLOC_LINK_LIBRARIES})")
elseif(DT_ALLOCATOR STREQUAL "mimalloc")
  find_package(mimalloc QUIET)
  if(NOT mimalloc_FOUND)
    dt_missing("mimalloc (mimalloc-config.cmake; DT_ALLOCATOR=mimalloc)" "libmimalloc-dev")
  endif()
  target_compile_definitions(dtrainer_allocator PRIVATE DT_ALLOCATOR_MIMALLOC)
  target_link_libraries(dtrainer_allocator PUBLIC mimalloc)
  dt_found("allocator" "mimalloc ${mimalloc_VERSION}")
elseif(DT_ALLOCATOR STREQUAL "system")
  target_compile_definitions(dtrainer_allocator PRIVATE DT_ALLOCATOR_SYSTEM)
  dt_found("allocator" "glibc malloc (DT_ALLOCATOR=system)")
else()
  message(FATAL_ERROR "dtrainer: DT_ALLOCATOR='${DT_ALLOCATOR}' is not one of jemalloc, mimalloc, system")
endif()

set(DT_BLAS_THREADS "openmp" CACHE STRING "BLAS of every dtrainer program: openmp (OpenBLAS on OpenMP) | system")
set_property(CACHE DT_BLAS_THREADS PROPERTY STRINGS openmp system)
if(DT_BLAS_THREADS STREQUAL "openmp")
  find_path(DT_OPENBLAS_OPENMP_DIR libopenblas.so.0 PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp
            NO_DEFAULT_PATH)
  if(NOT DT_OPENBLAS_OPENMP_DIR)
    dt_missing("OpenBLAS on OpenMP (openblas-openmp/libopenblas.so.0; DT_BLAS_THREADS=openmp)" "libopenblas0-openmp")
  endif()
  dt_found("BLAS" "OpenBLAS on OpenMP (${DT_OPENBLAS_OPENMP_DIR}, through the programs' RPATH)")
elseif(DT_BLAS_THREADS STREQUAL "system")
  dt_found("BLAS" "the system's libblas.so.3 (DT_BLAS_THREADS=system)")
else()
  message(FATAL_ERROR "dtrainer: DT_BLAS_THREADS='${DT_BLAS_THREADS}' is not one of openmp, system")
endif()

# The allocator's library must come before libc in the executable's needed list (it does: libc is
# always last) and must not be dropped by --as-needed (the object library references nothing in it
# when settings are compiled in as data), hence --no-as-needed around it (push/pop: the rest of the link keeps its own mode).
function(dt_program_runtime target)
  target_link_libraries(${target} PRIVATE dtrainer_allocator)
  if(DT_BLAS_THREADS STREQUAL "openmp")
    # An old-style RPATH (not RUNPATH): it is searched for the dependencies of dependencies too,
    # which is where libblas.so.3 is needed (by libtorch_cpu).
    set_property(TARGET ${target} APPEND PROPERTY BUILD_RPATH ${DT_OPENBLAS_OPENMP_DIR})
    set_property(TARGET ${target} APPEND PROPERTY INSTALL_RPATH ${DT_OPENBLAS_OPENMP_DIR})
    target_link_options(${target} PRIVATE -Wl,--disable-new-dtags)
  endif()
  if(DT_ALLOCATOR STREQUAL "jemalloc")
    target_link_libraries(${target} PRIVATE -Wl,--push-state,--no-as-needed ${JEMALLOC_LINK_LIBRARIES} -Wl,--pop-state)
  elseif(DT_ALLOCATOR STREQUAL "mimalloc")
    target_link_libraries(${target} PRIVATE -Wl,--push-state,--no-as-needed $<TARGET_LINKER_FILE:mimalloc> -Wl,--pop-state)
  endif()
endfunction()
