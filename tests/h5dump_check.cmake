# Runs h5dump on the file written by the 3-rank parallel HDF5 test and checks
# that the serial tool reads every value the ranks wrote.
execute_process(COMMAND ${H5DUMP} ${FILE} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "h5dump failed (${rc}): ${err}")
endif()
foreach(needle "DATASET \"slabs\"" "DATASET \"slabs_checked\"" "9002" "depthprune test")
  string(FIND "${out}" "${needle}" pos)
  if(pos EQUAL -1)
    message(FATAL_ERROR "h5dump output lacks '${needle}'")
  endif()
endforeach()
