# pdlua_add_c_test(NAME SOURCES... [LIBS libs...])
#   A C unit test: one executable, registered with ctest under c/NAME.
function(pdlua_add_c_test name)
  cmake_parse_arguments(T "" "" "LIBS" ${ARGN})
  add_executable(test_${name} ${T_UNPARSED_ARGUMENTS})
  target_link_libraries(test_${name} PRIVATE ${T_LIBS})
  add_test(NAME c/${name} COMMAND test_${name})
  set_tests_properties(c/${name} PROPERTIES TIMEOUT 120 LABELS c)
endfunction()

# pdlua_add_spec(FILE [LABELS l...])
#   A busted spec run inside build/pdlua, registered with ctest under spec/NAME.
function(pdlua_add_spec file)
  cmake_parse_arguments(S "" "TIMEOUT" "LABELS" ${ARGN})
  get_filename_component(name ${file} NAME_WE)
  string(REGEX REPLACE "_spec$" "" name ${name})
  if(NOT S_TIMEOUT)
    set(S_TIMEOUT 300)
  endif()
  add_test(NAME spec/${name}
           COMMAND $<TARGET_FILE:pdlua> run ${CMAKE_SOURCE_DIR}/spec/run_busted.lua
                   -o TAP ${file}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(spec/${name} PROPERTIES TIMEOUT ${S_TIMEOUT}
                       LABELS "spec;${S_LABELS}"
                       ENVIRONMENT "PDLUA_BUILD=${CMAKE_BINARY_DIR};PDLUA_SOURCE=${CMAKE_SOURCE_DIR}")
endfunction()
