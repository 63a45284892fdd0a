// Matrix products of the backward on the forward's micro-kernel (micro_kernel.h), float32: the
// column gradient weight^T x grad_output and the weight gradient grad_output x columns^T of every
// convolution group. PyTorch's BLAS reaches about half the micro-kernel's speed on these shapes
// on some processors (AMD EPYC), and its sums depend on the number of threads; here every output
// element is summed by one task, in a fixed order.
#pragma once

#include <cstdint>

namespace deformconv {

// A row-major matrix of a batch of `count` matrices, `step` floats apart.
struct Matrices {
  const float* data;
  int64_t stride;  // floats between consecutive rows
  int64_t step;    // floats between consecutive matrices of the batch
};

// For each n < count: c[n] = (accumulate ? c[n] : 0) + b[n] x a[n], with b[n] [rows][depth],
// a[n] [depth][cols] and c[n] [rows][cols] (row strides c_stride, matrices c_step apart). Each
// element of c is written by one task and sums its depth in order, so the result does not depend
// on the number of threads. Parallel over blocks of rows and columns (OpenMP). Needs a processor
// with a micro-kernel (micro_kernel().fn != nullptr).
void multiply(const Matrices& b, const Matrices& a, int64_t count, int64_t rows, int64_t cols, int64_t depth,
              float* c, int64_t c_stride, int64_t c_step, bool accumulate);

}  // namespace deformconv
