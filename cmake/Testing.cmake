# Test helpers: every test is a Catch2 executable registered with ctest.
#
#   dt_add_test(NAME SOURCES src... [LIBS lib...] [LABELS l...] [OWN_MAIN])
#       one process. OWN_MAIN: the sources define main() (e.g. a test that is also its own fixture).
#   dt_add_mpi_test(NAME SOURCES src... [LIBS lib...] [RANKS n...] [LABELS l...] [OWN_MAIN])
#       the same executable run under mpirun once per entry in RANKS (default: 2 4); runs with more
#       ranks than this machine has cores get --oversubscribe. Test names: NAME_np<n>.

include(ProcessorCount)
ProcessorCount(DT_NCORES)
if(DT_NCORES EQUAL 0)
  set(DT_NCORES 1)
endif()

# One object file holds Catch2's main(): generated, compiled once, linked by every test.
file(WRITE ${PROJECT_BINARY_DIR}/catch_main.cpp "#define CATCH_CONFIG_MAIN\n#include <catch2/catch.hpp>\n")
add_library(dt_catch_main OBJECT ${PROJECT_BINARY_DIR}/catch_main.cpp)
target_link_libraries(dt_catch_main PUBLIC Catch2::Catch2)

function(_dt_test_executable name)
  cmake_parse_arguments(T "OWN_MAIN" "" "SOURCES;LIBS;LABELS" ${ARGN})
  if(T_OWN_MAIN)
    add_executable(${name} ${T_SOURCES})
  else()
    add_executable(${name} ${T_SOURCES} $<TARGET_OBJECTS:dt_catch_main>)
  endif()
  target_link_libraries(${name} PRIVATE Catch2::Catch2 dt_warnings ${T_LIBS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  dt_program_runtime(${name})  # (tests run on what the programs run on)
endfunction()

function(dt_add_test name)
  cmake_parse_arguments(T "OWN_MAIN" "" "SOURCES;LIBS;LABELS" ${ARGN})
  set(own "")
  if(T_OWN_MAIN)
    set(own OWN_MAIN)
  endif()
  _dt_test_executable(${name} ${own} SOURCES ${T_SOURCES} LIBS ${T_LIBS})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}")
endfunction()

function(dt_add_mpi_test name)
  cmake_parse_arguments(T "OWN_MAIN" "" "SOURCES;LIBS;LABELS;RANKS" ${ARGN})
  if(NOT T_RANKS)
    set(T_RANKS 2 4)
  endif()
  set(own "")
  if(T_OWN_MAIN)
    set(own OWN_MAIN)
  endif()
  _dt_test_executable(${name} ${own} SOURCES ${T_SOURCES} LIBS MPI::MPI_CXX ${T_LIBS})
  foreach(n IN LISTS T_RANKS)
    set(extra "")
    if(n GREATER DT_NCORES)
      set(extra --oversubscribe)
    endif()
    # Each rank gets one BLAS/OpenMP thread so ranks x threads never exceeds the cores.
    add_test(NAME ${name}_np${n}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${n} ${extra}
                     -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1
                     ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${name}> ${MPIEXEC_POSTFLAGS})
    # Open MPI refuses to run as root unless told; CI machines run as root.
    set_tests_properties(${name}_np${n} PROPERTIES
      LABELS "mpi;${T_LABELS}"
      PROCESSORS ${n}
      ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
  endforeach()
endfunction()
