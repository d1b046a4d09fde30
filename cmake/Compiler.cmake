# Compiler settings shared by every dtrainer target: warnings and the ccache launcher.

if(DT_USE_CCACHE)
  find_program(DT_CCACHE ccache)
  if(DT_CCACHE)
    # The sloppiness settings let ccache cache translation units that use precompiled headers;
    # the base dir makes paths relative, so a fresh clone elsewhere (as CI makes) hits the cache.
    set(CMAKE_CXX_COMPILER_LAUNCHER
        ${CMAKE_COMMAND} -E env
        "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
        "CCACHE_BASEDIR=${PROJECT_SOURCE_DIR}" CCACHE_NOHASHDIR=1
        ${DT_CCACHE})
  endif()
endif()

# Warnings for our own code only (dependency headers are included as SYSTEM).
# Errors by default (CI builds this way); -DDT_WERROR=OFF for a compiler newer than Debian's that
# warns about something new.
option(DT_WERROR "treat warnings in dtrainer's own code as errors" ON)
add_library(dt_warnings INTERFACE)
target_compile_options(dt_warnings INTERFACE -Wall -Wextra -Wno-unused-parameter $<$<AND:$<BOOL:${DT_WERROR}>,$<COMPILE_LANGUAGE:CXX>>:-Werror>)
