// Backward kernel (included by backward.cpp and backward_avx2.cpp, once per instruction set),
// deterministic without atomics: a task is one (image n, level l, block of heads), and every
// gradient element belongs to exactly one task. The value gradient of a task is the rows of level
// l in image n for its heads; the location and weight gradients of (n, q, m, l, p) belong to the
// task of (n, l, m) for every query q and point p. A task walks its queries in order (heads
// inside: the heads of one pixel are neighbours in memory), so every sum runs in the same order
// whatever the number of threads and the size of the head blocks.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "kernels.h"

namespace deformconv::msda::DEFORMCONV_MSDA_ISA {

template <typename scalar_t, typename acc_t, int kChannels>
void backward(const Sizes& s, const scalar_t* grad_output, const scalar_t* value, const int64_t* spatial_shapes,
              const int64_t* level_start, const scalar_t* locations, const scalar_t* weights, acc_t* grad_value_acc,
              scalar_t* grad_value, scalar_t* grad_locations, scalar_t* grad_weights) {
  const int64_t M = s.heads, D = kChannels > 0 ? kChannels : s.channels, L = s.levels, P = s.points, Lq = s.queries;
  const int64_t pixel_stride = M * D;
  const bool need_coordinates = grad_locations != nullptr || grad_weights != nullptr;
  // Whole heads per task when there are enough tasks for the threads, fewer otherwise.
  const int64_t wanted_tasks = 4 * static_cast<int64_t>(torch::stable::get_num_threads());
  int64_t heads_per_task = M;
  while (heads_per_task > 1 && s.batch * L * ((M + heads_per_task - 1) / heads_per_task) < wanted_tasks) {
    heads_per_task = (heads_per_task + 1) / 2;
  }
  const int64_t head_blocks = (M + heads_per_task - 1) / heads_per_task;
  torch::stable::parallel_for(0, s.batch * L * head_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / (L * head_blocks), l = (task / head_blocks) % L;
      const int64_t first_head = (task % head_blocks) * heads_per_task;
      const int64_t last_head = first_head + heads_per_task < M ? first_head + heads_per_task : M;
      const int64_t height = spatial_shapes[2 * l], width = spatial_shapes[2 * l + 1];
      for (int64_t q = 0; q < Lq; ++q) {
        for (int64_t m = first_head; m < last_head; ++m) {
          const int64_t level_offset = ((n * s.num_value + level_start[l]) * M + m) * D;
          const scalar_t* level = value + level_offset;
          acc_t* grad_level = grad_value_acc == nullptr ? nullptr : grad_value_acc + level_offset;
          const int64_t row = (n * Lq + q) * M + m;
          const scalar_t* grad_out = grad_output + row * D;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t k = (row * L + l) * P + p;
            Corners<acc_t> c;
            const bool inside = corners_of(static_cast<acc_t>(locations[2 * k]),
                                           static_cast<acc_t>(locations[2 * k + 1]), height, width, c);
            const acc_t a = static_cast<acc_t>(weights[k]);
            acc_t grad_a = 0, grad_x = 0, grad_y = 0;
            if (inside) {
              for (int corner = 0; corner < 4; ++corner) {
                if (!c.valid[corner]) continue;
                const int64_t offset = c.index[corner] * pixel_stride;
                const scalar_t* src = level + offset;
                const acc_t w = a * c.weight[corner];
                // d output / d (bilinear weight of this corner) = <grad_out, value at the corner>,
                // summed in a fixed vector order (set at compile time): the same bits on every run.
                acc_t dot = 0;
                if (need_coordinates && grad_level != nullptr) {
                  acc_t* dst = grad_level + offset;
#pragma omp simd reduction(+ : dot)
                  for (int64_t d = 0; d < D; ++d) {
                    const acc_t g = static_cast<acc_t>(grad_out[d]);
                    dot += g * static_cast<acc_t>(src[d]);
                    dst[d] += w * g;
                  }
                } else if (need_coordinates) {
#pragma omp simd reduction(+ : dot)
                  for (int64_t d = 0; d < D; ++d) dot += static_cast<acc_t>(grad_out[d]) * static_cast<acc_t>(src[d]);
                } else {
                  acc_t* dst = grad_level + offset;
#pragma omp simd
                  for (int64_t d = 0; d < D; ++d) dst[d] += w * static_cast<acc_t>(grad_out[d]);
                }
                grad_a += c.weight[corner] * dot;
                grad_x += c.weight_dx[corner] * dot;
                grad_y += c.weight_dy[corner] * dot;
              }
            }
            if (grad_weights != nullptr) grad_weights[k] = static_cast<scalar_t>(grad_a);
            if (grad_locations != nullptr) {
              // d(pixel x)/d(location x) = W, likewise for y and H.
              grad_locations[2 * k] = static_cast<scalar_t>(grad_x * a * static_cast<acc_t>(width));
              grad_locations[2 * k + 1] = static_cast<scalar_t>(grad_y * a * static_cast<acc_t>(height));
            }
          }
        }
      }
      if (grad_value_acc != nullptr && static_cast<void*>(grad_value) != static_cast<void*>(grad_value_acc)) {
        // Half types: round this task's rows of the accumulation buffer into the gradient.
        const int64_t level_offset = (n * s.num_value + level_start[l]) * M * D;
        for (int64_t pixel = 0; pixel < height * width; ++pixel) {
          const int64_t offset = level_offset + pixel * pixel_stride;
          for (int64_t d = first_head * D; d < last_head * D; ++d) {
            grad_value[offset + d] = static_cast<scalar_t>(grad_value_acc[offset + d]);
          }
        }
      }
    }
  });
}

#define DEFORMCONV_MSDA_BACKWARD(scalar_t, acc_t, channels)                                                 \
  template void backward<scalar_t, acc_t, channels>(const Sizes&, const scalar_t*, const scalar_t*, const int64_t*, \
                                                    const int64_t*, const scalar_t*, const scalar_t*, acc_t*,      \
                                                    scalar_t*, scalar_t*, scalar_t*);
#define DEFORMCONV_MSDA_BACKWARDS(scalar_t, acc_t) \
  DEFORMCONV_MSDA_BACKWARD(scalar_t, acc_t, 0)     \
  DEFORMCONV_MSDA_BACKWARD(scalar_t, acc_t, 32)
DEFORMCONV_MSDA_BACKWARDS(float, float)
DEFORMCONV_MSDA_BACKWARDS(double, double)
DEFORMCONV_MSDA_BACKWARDS(c10::Half, float)
DEFORMCONV_MSDA_BACKWARDS(c10::BFloat16, float)
#undef DEFORMCONV_MSDA_BACKWARDS
#undef DEFORMCONV_MSDA_BACKWARD

}  // namespace deformconv::msda::DEFORMCONV_MSDA_ISA
