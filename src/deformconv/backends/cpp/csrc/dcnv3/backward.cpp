// DCNv3 / DCNv4 backward on CPU, deterministic and without atomics (see kernels.h).
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <algorithm>
#include <vector>

#include "channels.h"
#include "kernels.h"

namespace deformconv::dcn {
namespace {

// Writes the offset pair's and the weight's gradients of one sample point from the dot products
// of grad_output with the input at its four corners, weighted by the bilinear weights and their
// derivatives (zero for a corner outside the image).
template <typename scalar_t, typename acc_t>
inline void write_point_grads(const Corners<acc_t>& c, const acc_t* dot, acc_t scaled_weight, scalar_t* grad_offset,
                              scalar_t* grad_mask) {
  acc_t grad_w = 0, grad_x = 0, grad_y = 0;
  for (int k = 0; k < 4 && c.any; ++k) {
    grad_w += c.weight[k] * dot[k];
    grad_x += c.weight_dx[k] * dot[k];
    grad_y += c.weight_dy[k] * dot[k];
  }
  grad_offset[0] = scalar_t(scaled_weight * grad_x);
  grad_offset[1] = scalar_t(scaled_weight * grad_y);
  *grad_mask = scalar_t(grad_w);
}

// The four corners' input rows of a sample point (a corner outside reads pixel 0 with zero weights).
template <typename scalar_t, typename acc_t>
inline void corner_rows(const Corners<acc_t>& c, const scalar_t* image, int64_t channels, const scalar_t** rows) {
  for (int k = 0; k < 4; ++k) rows[k] = image + c.pixel[k] * channels;
}

// Offset and weight gradients: each output pixel's are written by the thread that owns the pixel.
template <typename scalar_t, typename acc_t>
void offset_mask_grad(const Geometry& g, const scalar_t* grad_output, const scalar_t* input, const scalar_t* offset,
                      const scalar_t* mask, scalar_t* grad_offset, scalar_t* grad_mask) {
  const int64_t pixels = g.pixels(), depth = g.group_channels;
  const acc_t scale = acc_t(g.offset_scale);
  torch::stable::parallel_for(0, g.batch * pixels, g.pixel_grain(), [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / pixels, oy = (q % pixels) / g.out_w, ox = q % g.out_w;
      const scalar_t* image = input + n * g.height * g.width * g.channels;
      for (int64_t grp = 0; grp < g.group; ++grp) {
        const int64_t off_at = g.offset_at(q, grp);
        const int64_t msk_at = g.mask_at(q, grp);
        const scalar_t* go = grad_output + q * g.channels + grp * depth;
        for (int64_t p = 0; p < g.points; ++p) {
          const Corners<acc_t> c = point_corners<scalar_t, acc_t>(g, offset + off_at + 2 * p, oy, ox, p);
          acc_t dot[4] = {0, 0, 0, 0};
          if (c.any) {
            const scalar_t* rows[4];
            corner_rows(c, image + grp * depth, g.channels, rows);
            dots4(go, rows, depth, dot);
          }
          const acc_t m = acc_t(mask[msk_at + p]) * scale;
          write_point_grads(c, dot, m, grad_offset + off_at + 2 * p, grad_mask + msk_at + p);
        }
      }
    }
  });
}

// Input gradient: a task owns one image, one group and a run of its channels, and adds every
// sample point's share in the order of the output pixels, so the sums do not depend on threads.
// When a task owns all the channels of its group (runs == 1) it also computes the offset and
// weight gradients of that image and group, which only it reads and writes.
template <typename scalar_t, typename acc_t>
void input_grad(const Geometry& g, const scalar_t* grad_output, const scalar_t* input, const scalar_t* offset,
                const scalar_t* mask, acc_t* grad_input, scalar_t* grad_offset, scalar_t* grad_mask, int64_t runs) {
  const int64_t pixels = g.pixels(), depth = g.group_channels;
  const int64_t base_tasks = g.batch * g.group;
  const int64_t run = (depth + runs - 1) / runs;
  const acc_t scale = acc_t(g.offset_scale);
  const bool fused = grad_offset != nullptr && runs == 1;
  // One task per thread chunk unless the whole problem is small (see Geometry::pixel_grain).
  const int64_t grain = g.batch * pixels <= g.pixel_grain() ? base_tasks * runs : 1;
  torch::stable::parallel_for(0, base_tasks * runs, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch(depth);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / (g.group * runs), grp = (task / runs) % g.group, r = task % runs;
      const int64_t d0 = r * run, d1 = std::min(depth, d0 + run);
      if (d0 >= d1) continue;
      acc_t* image_grad = grad_input + n * g.height * g.width * g.channels + grp * depth;
      const scalar_t* image = input + n * g.height * g.width * g.channels + grp * depth;
      for (int64_t pix = 0; pix < pixels; ++pix) {
        const int64_t q = n * pixels + pix, oy = pix / g.out_w, ox = pix % g.out_w;
        const int64_t off_at = g.offset_at(q, grp);
        const int64_t msk_at = g.mask_at(q, grp);
        const scalar_t* go = grad_output + q * g.channels + grp * depth;
        for (int64_t p = 0; p < g.points; ++p) {
          const Corners<acc_t> c = point_corners<scalar_t, acc_t>(g, offset + off_at + 2 * p, oy, ox, p);
          const acc_t m = acc_t(mask[msk_at + p]);
          acc_t dot[4] = {0, 0, 0, 0};
          if (c.any) {
            // A corner outside the image adds into a scratch row instead, so one pass serves all four.
            acc_t* dst[4];
            acc_t w[4];
            for (int k = 0; k < 4; ++k) {
              dst[k] = c.valid[k] ? image_grad + c.pixel[k] * g.channels + d0 : scratch.data();
              w[k] = c.valid[k] ? m * c.weight[k] : acc_t(0);
            }
            if (fused) {
              const scalar_t* rows[4];
              corner_rows(c, image, g.channels, rows);
              scatter4_dots4(dst, w, go, rows, depth, dot);
            } else {
              scatter4(dst, w, go + d0, d1 - d0);
            }
          }
          if (fused) write_point_grads(c, dot, m * scale, grad_offset + off_at + 2 * p, grad_mask + msk_at + p);
        }
      }
    }
  });
}

// Channel runs per (image, group) task: enough tasks to keep every thread busy, runs of >= 8 channels.
int64_t channel_runs(const Geometry& g) {
  const int64_t base_tasks = g.batch * g.group;
  const int64_t wanted = 4 * static_cast<int64_t>(torch::stable::get_num_threads());
  if (base_tasks >= wanted) return 1;
  return std::max<int64_t>(1, std::min((wanted + base_tasks - 1) / base_tasks, (g.group_channels + 7) / 8));
}

}  // namespace

template <typename scalar_t, typename acc_t>
void backward(const Geometry& g, const scalar_t* grad_output, const scalar_t* input, const scalar_t* offset,
              const scalar_t* mask, acc_t* grad_input, scalar_t* grad_offset, scalar_t* grad_mask) {
  if (g.batch == 0) return;
  const int64_t runs = channel_runs(g);
  if (grad_input == nullptr || runs > 1) {
    if (grad_offset != nullptr) {
      offset_mask_grad<scalar_t, acc_t>(g, grad_output, input, offset, mask, grad_offset, grad_mask);
    }
    if (grad_input != nullptr) {
      input_grad<scalar_t, acc_t>(g, grad_output, input, offset, mask, grad_input, nullptr, nullptr, runs);
    }
  } else {
    input_grad<scalar_t, acc_t>(g, grad_output, input, offset, mask, grad_input, grad_offset, grad_mask, runs);
  }
}

#define DEFORMCONV_DCN_BACKWARD(scalar_t, acc_t)                                                                   \
  template void backward<scalar_t, acc_t>(const Geometry&, const scalar_t*, const scalar_t*, const scalar_t*, \
                                          const scalar_t*, acc_t*, scalar_t*, scalar_t*);
DEFORMCONV_DCN_BACKWARD(float, float)
DEFORMCONV_DCN_BACKWARD(double, double)
DEFORMCONV_DCN_BACKWARD(c10::Half, float)
DEFORMCONV_DCN_BACKWARD(c10::BFloat16, float)

}  // namespace deformconv::dcn
