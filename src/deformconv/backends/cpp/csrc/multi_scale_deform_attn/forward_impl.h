// Forward kernel (included by forward.cpp and forward_avx2.cpp, once per instruction set):
// threads own output rows (one image and query each), so no two write alike.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "kernels.h"

namespace deformconv::msda::DEFORMCONV_MSDA_ISA {

// Channels accumulated at once (on the stack); wider heads loop over chunks.
constexpr int64_t kChannelChunk = 64;

template <typename scalar_t, typename acc_t, int kChannels>
void forward(const Sizes& s, const scalar_t* value, const int64_t* spatial_shapes, const int64_t* level_start,
             const scalar_t* locations, const scalar_t* weights, scalar_t* output) {
  static_assert(kChannels <= kChannelChunk, "fixed channel counts fit one chunk");
  const int64_t M = s.heads, D = kChannels > 0 ? kChannels : s.channels, L = s.levels, P = s.points;
  const int64_t pixel_stride = M * D;  // between neighbouring pixels of one head's map
  // Rows are cheap to very expensive (L*P*4*D multiply-adds each): small grains balance them.
  torch::stable::parallel_for(0, s.batch * s.queries, 16, [&](int64_t begin, int64_t end) {
    // A chunk of channels on the stack (no std templates here: see forward_avx2.cpp).
    acc_t sum[kChannelChunk];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.queries;
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t d0 = 0; d0 < D; d0 += kChannelChunk) {
          const int64_t width_d = kChannels > 0 ? kChannels : (D - d0 < kChannelChunk ? D - d0 : kChannelChunk);
          for (int64_t d = 0; d < width_d; ++d) sum[d] = acc_t(0);
          for (int64_t l = 0; l < L; ++l) {
            const int64_t height = spatial_shapes[2 * l], width = spatial_shapes[2 * l + 1];
            const scalar_t* level = value + ((n * s.num_value + level_start[l]) * M + m) * D + d0;
            for (int64_t p = 0; p < P; ++p) {
              const int64_t k = ((row * M + m) * L + l) * P + p;
              Corners<acc_t> c;
              if (!corners_of(static_cast<acc_t>(locations[2 * k]), static_cast<acc_t>(locations[2 * k + 1]), height,
                              width, c)) {
                continue;
              }
              const acc_t a = static_cast<acc_t>(weights[k]);
              for (int corner = 0; corner < 4; ++corner) {
                if (!c.valid[corner]) continue;
                const acc_t w = a * c.weight[corner];
                const scalar_t* src = level + c.index[corner] * pixel_stride;
#pragma omp simd
                for (int64_t d = 0; d < width_d; ++d) sum[d] += w * static_cast<acc_t>(src[d]);
              }
            }
          }
          scalar_t* dst = output + (row * M + m) * D + d0;
          for (int64_t d = 0; d < width_d; ++d) dst[d] = static_cast<scalar_t>(sum[d]);
        }
      }
    }
  });
}

#define DEFORMCONV_MSDA_FORWARD(scalar_t, acc_t, channels)                                               \
  template void forward<scalar_t, acc_t, channels>(const Sizes&, const scalar_t*, const int64_t*, const int64_t*, \
                                                   const scalar_t*, const scalar_t*, scalar_t*);
#define DEFORMCONV_MSDA_FORWARDS(scalar_t, acc_t) \
  DEFORMCONV_MSDA_FORWARD(scalar_t, acc_t, 0)     \
  DEFORMCONV_MSDA_FORWARD(scalar_t, acc_t, 32)
DEFORMCONV_MSDA_FORWARDS(float, float)
DEFORMCONV_MSDA_FORWARDS(double, double)
DEFORMCONV_MSDA_FORWARDS(c10::Half, float)
DEFORMCONV_MSDA_FORWARDS(c10::BFloat16, float)
#undef DEFORMCONV_MSDA_FORWARDS
#undef DEFORMCONV_MSDA_FORWARD

}  // namespace deformconv::msda::DEFORMCONV_MSDA_ISA
