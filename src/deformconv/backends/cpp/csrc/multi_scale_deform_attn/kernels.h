// Multi-scale deformable attention on CPU: sizes, bilinear corners and the typed kernels.
// Sources: forward_impl.h and backward_impl.h (kernels, compiled by forward*.cpp and backward*.cpp),
// library.cpp (schemas, dtype and instruction-set dispatch).
// Only PyTorch's stable ABI is used, so one binary serves every torch >= 2.10.
#pragma once

#include <cmath>
#include <cstdint>

namespace deformconv::msda {

// Sizes of one call (see deformconv/ops/multi_scale_deform_attn/geometry.py). Tensors are
// contiguous: value [N, S, M, D], spatial_shapes [L, 2], level_start_index [L],
// sampling_locations [N, Lq, M, L, P, 2], attention_weights [N, Lq, M, L, P], output and
// grad_output [N, Lq, M*D].
struct Sizes {
  int64_t batch, num_value, heads, channels, queries, levels, points;
};

// The four integer neighbours of one sample point, in the order (y0, x0), (y0, x0+1),
// (y0+1, x0), (y0+1, x0+1).
template <typename acc_t>
struct Corners {
  int64_t index[4];  // y*W + x inside the level (0 where the corner lies outside)
  bool valid[4];     // the corner lies inside the level
  acc_t weight[4];   // bilinear weight
  acc_t weight_dx[4];  // its derivative with respect to the pixel x
  acc_t weight_dy[4];  // and to the pixel y
};

// Location (x, y) in [0, 1] of an H x W level is the pixel point (x*W - 0.5, y*H - 0.5), as
// grid_sample with align_corners=False. Returns false (the point reads 0) unless -1 < x' < W
// and -1 < y' < H; that test is false for NaN and Inf, so no index is computed from them.
template <typename acc_t>
inline bool corners_of(acc_t loc_x, acc_t loc_y, int64_t height, int64_t width, Corners<acc_t>& out) {
  const acc_t x = loc_x * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(height) - acc_t(0.5);
  if (!(x > acc_t(-1) && x < static_cast<acc_t>(width) && y > acc_t(-1) && y < static_cast<acc_t>(height))) {
    return false;
  }
  const acc_t fx = std::floor(x), fy = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  const acc_t lx = x - fx, ly = y - fy, hx = acc_t(1) - lx, hy = acc_t(1) - ly;
  const acc_t weight[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
  const acc_t weight_dx[4] = {-hy, hy, -ly, ly};
  const acc_t weight_dy[4] = {-hx, -lx, hx, lx};
  for (int c = 0; c < 4; ++c) {
    const int64_t cy = y0 + c / 2, cx = x0 + c % 2;
    const bool valid = cy >= 0 && cy < height && cx >= 0 && cx < width;
    out.valid[c] = valid;
    out.index[c] = valid ? cy * width + cx : 0;
    out.weight[c] = valid ? weight[c] : acc_t(0);
    out.weight_dx[c] = valid ? weight_dx[c] : acc_t(0);
    out.weight_dy[c] = valid ? weight_dy[c] : acc_t(0);
  }
  return true;
}

// The kernels are compiled twice (forward_impl.h and backward_impl.h): for the baseline
// instruction set (namespace generic) and for AVX2 with FMA (namespace avx2, x86-64 only), which
// library.cpp picks at run time when the processor has it. Each is deterministic on its own;
// the two may differ by rounding (FMA, vector width). kChannels > 0 fixes the channels per head at
// compile time (the loops over them unroll and stay in registers): library.cpp uses 32, the
// width of Deformable DETR, DINO, Mask2Former and BEVFormer; 0 reads it from the sizes.
#define DEFORMCONV_MSDA_DECLARE_KERNELS(isa)                                                                      \
  namespace isa {                                                                                               \
  /* output[n, q, m*D + d] = sum over levels and points of weight * bilinear sample. */                        \
  template <typename scalar_t, typename acc_t, int kChannels>                                                   \
  void forward(const Sizes& s, const scalar_t* value, const int64_t* spatial_shapes, const int64_t* level_start, \
               const scalar_t* locations, const scalar_t* weights, scalar_t* output);                          \
  /* Gradients; a null pointer is a gradient not asked for. grad_value_acc is the accumulation buffer         \
     [N, S, M, D] (zeroed, in acc_t); grad_value receives it in scalar_t when the two differ (half types). */   \
  template <typename scalar_t, typename acc_t, int kChannels>                                                   \
  void backward(const Sizes& s, const scalar_t* grad_output, const scalar_t* value,                            \
                const int64_t* spatial_shapes, const int64_t* level_start, const scalar_t* locations,          \
                const scalar_t* weights, acc_t* grad_value_acc, scalar_t* grad_value, scalar_t* grad_locations, \
                scalar_t* grad_weights);                                                                        \
  }

DEFORMCONV_MSDA_DECLARE_KERNELS(generic)
DEFORMCONV_MSDA_DECLARE_KERNELS(avx2)
#undef DEFORMCONV_MSDA_DECLARE_KERNELS

}  // namespace deformconv::msda
