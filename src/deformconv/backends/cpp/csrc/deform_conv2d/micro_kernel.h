// Register-blocked matrix product for the fused forward: C[rows][MR] (+)= B[rows][depth] x A[depth][MR],
// with A packed (MR consecutive output channels per depth index) and B row-major (the sampled
// columns, one output pixel per row). Written with AVX-512 or AVX2 + FMA intrinsics; the
// instruction set is chosen once, at run time, from what the processor supports.
#pragma once

#include <cstdint>

namespace deformconv {

// The depth of a product: `segments` runs of `length` consecutive entries of a row of B, `stride`
// entries apart (a convolution group's columns of each kernel point), taken as one dot product.
struct Depth {
  int64_t segments, length, stride;
};

// c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum over s < segments, p < length of
// b[i * ldb + s * stride + p] * a[(s * length + p) * mr + j], for i < nr and j < mr. Each sum runs
// in that order, one fused multiply-add per term, so a result does not depend on the thread or
// on where its row sits in a block.
using MicroKernelFn = void (*)(const float* a, const float* b, int64_t ldb, const Depth& depth, float* c,
                               int64_t ldc, bool accumulate);

struct MicroKernel {
  MicroKernelFn fn;  // nullptr when the processor has neither AVX-512 nor AVX2 + FMA
  int64_t mr;        // output channels per call (the vector width times the vectors per row)
  int64_t nr;        // rows (output pixels) per call
  int64_t depth;     // depth block: a block of A (depth x mr floats) stays in the L1 cache
  const char* isa;   // "avx512", "avx2" or "none"
};

// The best micro-kernel for this processor (looked up once).
const MicroKernel& micro_kernel();

}  // namespace deformconv
