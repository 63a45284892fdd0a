#include "matrix_product.h"

#include <omp.h>

#include <algorithm>
#include <memory>

#include "../vectorize.h"
#include "micro_kernel.h"

namespace deformconv {

namespace {

// Rows of c per task, at most: a task packs each depth block of its mr columns of a once (an L1
// cache's worth) and multiplies all its rows with it, keeping their results (rows x mr floats) in
// the L1 cache. About 1% of a task's time goes to packing.
constexpr int64_t kTaskRows = 96;

// packed[p][j] = a[p * stride + j] for j < width, 0 for width <= j < mr (p < depth).
DEFORMCONV_VECTORIZE void pack_columns(const float* a, int64_t stride, int64_t depth, int64_t width, int64_t mr,
                                       float* packed) {
  for (int64_t p = 0; p < depth; ++p) {
    std::copy(a + p * stride, a + p * stride + width, packed + p * mr);
    std::fill(packed + p * mr + width, packed + (p + 1) * mr, 0.0f);
  }
}

// The last rows of b, fewer than the micro-kernel's nr, as nr rows `depth` apart (zero past the
// matrix): the micro-kernel reads nr whole rows.
void pad_rows(const float* b, int64_t stride, int64_t rows, int64_t depth, int64_t nr, float* tail) {
  for (int64_t i = 0; i < rows; ++i) {
    std::copy(b + i * stride, b + i * stride + depth, tail + i * depth);
  }
  std::fill(tail + rows * depth, tail + nr * depth, 0.0f);
}

}  // namespace

void multiply(const Matrices& b, const Matrices& a, int64_t count, int64_t rows, int64_t cols, int64_t depth,
              float* c, int64_t c_stride, int64_t c_step, bool accumulate) {
  const MicroKernel& kernel = micro_kernel();
  const int64_t mr = kernel.mr, nr = kernel.nr, block_depth = kernel.depth;
  if (count == 0 || rows == 0 || cols == 0) {
    return;
  }
  const int64_t task_rows = std::min(kTaskRows / nr, (rows + nr - 1) / nr) * nr;
  const int64_t row_tasks = (rows + task_rows - 1) / task_rows, col_tasks = (cols + mr - 1) / mr;
  const int64_t tasks = count * col_tasks * row_tasks;
  const int64_t threads = std::min<int64_t>(omp_get_max_threads(), tasks);
  // Every thread's buffers, allocated here: an allocation failure must not happen inside the
  // parallel region, where an exception cannot leave.
  const int64_t scratch_size = block_depth * mr + task_rows * mr + nr * block_depth;
  const std::unique_ptr<float[]> scratch(new float[threads * scratch_size]);
#pragma omp parallel num_threads(threads)
  {
    float* const packed = scratch.get() + omp_get_thread_num() * scratch_size;
    float* const results = packed + block_depth * mr;
    float* const tail = results + task_rows * mr;
    // Consecutive tasks share their columns of a.
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t n = task / (col_tasks * row_tasks);
      const int64_t col = task / row_tasks % col_tasks * mr, row = task % row_tasks * task_rows;
      const int64_t width = std::min(mr, cols - col), height = std::min(task_rows, rows - row);
      const float* const bn = b.data + n * b.step + row * b.stride;
      const float* const an = a.data + n * a.step + col;
      if (depth == 0) {
        std::fill(results, results + height * mr, 0.0f);
      }
      for (int64_t d = 0; d < depth; d += block_depth) {
        const int64_t length = std::min(block_depth, depth - d);
        pack_columns(an + d * a.stride, a.stride, length, width, mr, packed);
        for (int64_t i = 0; i < height; i += nr) {
          const float* block = bn + i * b.stride + d;
          int64_t stride = b.stride;
          if (height - i < nr) {
            pad_rows(block, b.stride, height - i, length, nr, tail);
            block = tail;
            stride = length;
          }
          kernel.fn(packed, block, stride, Depth{1, length, 0}, results + i * mr, mr, d > 0);
        }
      }
      float* const cn = c + n * c_step + row * c_stride + col;
      for (int64_t i = 0; i < height; ++i) {
        float* target = cn + i * c_stride;
        const float* source = results + i * mr;
        for (int64_t j = 0; j < width; ++j) {
          target[j] = accumulate ? target[j] + source[j] : source[j];
        }
      }
    }
  }
}

}  // namespace deformconv
