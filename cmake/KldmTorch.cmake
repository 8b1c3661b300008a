# SPDX-License-Identifier: MIT
# Find the torch of the interpreter that builds us, and decide whether CUDA kernels are compiled.
#
# Inputs (cache):  KLDM_WITH_CUDA = AUTO | ON | OFF   (AUTO: CUDA iff torch has CUDA and nvcc is found)
#                  KLDM_CUDA_ARCHITECTURES = "80;90"  (CMake syntax: 80, 90a, 100-virtual, ...)
# Outputs:         KLDM_CUDA_ENABLED, KLDM_CUDA_ARCHS_BUILT, KLDM_TORCH_VERSION, the imported target `torch`.

set(KLDM_WITH_CUDA "AUTO" CACHE STRING "Compile CUDA kernels: AUTO, ON or OFF")
set_property(CACHE KLDM_WITH_CUDA PROPERTY STRINGS AUTO ON OFF)
set(KLDM_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures (CMake syntax), e.g. 80;90")

find_package(Python 3.10 REQUIRED COMPONENTS Interpreter Development.Module)

# Ask the interpreter, not CMAKE_PREFIX_PATH: an isolated pip build may see two torches, and CMake
# must use the one Python imports.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import torch; print(torch.utils.cmake_prefix_path); print(torch.__version__.split('+')[0]); print(int(torch.version.cuda is not None)); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
  OUTPUT_VARIABLE _kldm_torch_info OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _kldm_torch_rc ERROR_VARIABLE _kldm_torch_err)
if(NOT _kldm_torch_rc EQUAL 0)
  message(FATAL_ERROR "kspace-ldm: cannot import torch with ${Python_EXECUTABLE}: ${_kldm_torch_err}\n"
                      "Install torch first, then build with: pip install --no-build-isolation .")
endif()
string(REPLACE "\n" ";" _kldm_torch_info "${_kldm_torch_info}")
list(GET _kldm_torch_info 0 _kldm_torch_prefix)
list(GET _kldm_torch_info 1 KLDM_TORCH_VERSION)
list(GET _kldm_torch_info 2 _kldm_torch_has_cuda)
list(GET _kldm_torch_info 3 _kldm_cxx11_abi)
if(NOT _kldm_cxx11_abi)
  message(FATAL_ERROR "kspace-ldm needs a torch built with the C++11 ABI (_GLIBCXX_USE_CXX11_ABI=1)")
endif()
set(Torch_DIR "${_kldm_torch_prefix}/Torch" CACHE PATH "TorchConfig.cmake of the building interpreter" FORCE)

set(KLDM_CUDA_ENABLED OFF)
set(KLDM_CUDA_ARCHS_BUILT "")
if(_kldm_torch_has_cuda)
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND KLDM_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KLDM_WITH_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
  if(CMAKE_CUDA_COMPILER)
    # A CUDA torch's TorchConfig needs a toolkit even when we compile no kernels.
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)   # as torch does: one cudart, the shared one
    # torch's CMake ignores CMAKE_CUDA_ARCHITECTURES and reads TORCH_CUDA_ARCH_LIST: translate ours
    # ("80;90a;100-virtual" -> "8.0;9.0a;10.0+PTX") and never leave it empty (that means 11 archs).
    set(_list "")
    foreach(_a IN LISTS KLDM_CUDA_ARCHITECTURES)
      string(REGEX MATCH "^([0-9]+)([0-9])([af]?)(-virtual|-real)?$" _m "${_a}")
      if(NOT _m)
        message(FATAL_ERROR "KLDM_CUDA_ARCHITECTURES: cannot parse '${_a}'")
      endif()
      set(_e "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}${CMAKE_MATCH_3}")
      if(CMAKE_MATCH_4 STREQUAL "-virtual")
        set(_e "${_e}+PTX")
      endif()
      list(APPEND _list "${_e}")
    endforeach()
    set(TORCH_CUDA_ARCH_LIST "${_list}")
    set(ENV{TORCH_CUDA_ARCH_LIST} "${_list}")
    set(CMAKE_CUDA_ARCHITECTURES OFF)
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    # torch's bundled FindCUDA takes the toolkit root from nvcc's path (wrong for wrapper scripts).
    set(CUDA_TOOLKIT_ROOT_DIR "${CMAKE_CUDA_COMPILER_TOOLKIT_ROOT}")
    find_package(CUDAToolkit REQUIRED)
    if(NOT KLDM_WITH_CUDA STREQUAL "OFF")
      set(KLDM_CUDA_ENABLED ON)
      set(KLDM_CUDA_ARCHS_BUILT "${KLDM_CUDA_ARCHITECTURES}")
    endif()
  else()
    message(STATUS "kspace-ldm: torch has CUDA but nvcc was not found: building CPU kernels only")
  endif()
elseif(KLDM_WITH_CUDA STREQUAL "ON")
  message(FATAL_ERROR "KLDM_WITH_CUDA=ON but the building torch (${KLDM_TORCH_VERSION}) has no CUDA")
endif()

find_package(Torch REQUIRED CONFIG)
# TORCH_LIBRARIES may hold NOTFOUND entries for CUDA libraries we never call; link the `torch` target.
if(KLDM_CUDA_ENABLED)
  set(CMAKE_CUDA_ARCHITECTURES OFF)
endif()
