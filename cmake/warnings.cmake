# Warnings are errors on our own code (never on third-party headers, which come in as SYSTEM).
function(sinkserve_target_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Werror -Wno-unused-parameter>)
endfunction()
