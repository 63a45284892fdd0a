// The backward kernel compiled for AVX2 with FMA (x86-64), chosen at run time by library.cpp.
// Every header is included before the target pragma, so that only this file's own functions
// (in namespace avx2) are compiled for AVX2, never an inline function shared with other files;
// for the same reason the kernels use no std templates.
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx2,fma")
#endif
#define DEFORMCONV_MSDA_ISA avx2
#include "backward_impl.h"
