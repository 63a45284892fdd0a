// Bilinear sampling: where each kernel point of an output pixel reads the input, and with
// which weights. All kernel points of a pixel are sampled together, in loops the compiler
// vectorises; the channel loops then reuse each point's corners and weights.
#pragma once

#include <cstdint>
#include <vector>

#include "geometry.h"
#include "../vectorize.h"

namespace deformconv {

// One sample point. Corners in the order (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1).
template <typename T>
struct SamplePoint {
  int64_t index[4];  // flat pixel index y * W + x; meaningful only for valid corners
  T weight[4];       // bilinear weight, 0 for invalid corners
  int valid;         // bit j set when corner j lies inside the image

  static constexpr int kAllValid = 15;
};

// Samples `count` points: point q is at (offset[2q] + tap_y[q] + row_y, offset[2q+1] + tap_x[q] +
// row_x) in an image of height x width pixels. Writes its top-left corner (y0, x0), the valid
// corners (bit j for corner j), the fractional parts (ly, lx) and the four corner weights
// (0 for invalid corners). Written without branches, so that it vectorises.
template <typename T>
void sample_points(const T* __restrict__ offset, const T* __restrict__ tap_y, const T* __restrict__ tap_x,
                   T row_y, T row_x, int64_t height, int64_t width, int64_t count, int32_t* __restrict__ y0,
                   int32_t* __restrict__ x0, int32_t* __restrict__ valid, T* __restrict__ ly,
                   T* __restrict__ lx, T* __restrict__ w0, T* __restrict__ w1, T* __restrict__ w2,
                   T* __restrict__ w3);

// The sample points [first, first + count) (point = offset group * K + kernel point) of one
// output pixel, with torchvision's rules: a point at (y, x) reads 0 unless -1 < y < H and
// -1 < x < W; otherwise each integer neighbour inside the image weighs (1 - |y - cy|)(1 - |x - cx|).
// The test is written as "inside" so that NaN and Inf coordinates read 0 and never reach the
// float-to-integer conversion. Derivatives are those of the floor-based formula (one-sided at
// integer coordinates).
template <typename T>
class PointTable {
 public:
  explicit PointTable(const Geometry& g)
      : g_(g),
        points_(g.offset_groups * g.kernel_points),
        tap_y_(points_),
        tap_x_(points_),
        y0_(points_),
        x0_(points_),
        valid_(points_),
        ly_(points_),
        lx_(points_),
        scale_(points_) {
    for (auto& w : weight_) {
      w.resize(points_);
    }
    for (int64_t q = 0; q < points_; ++q) {
      const int64_t k = q % g.kernel_points;
      tap_y_[q] = T((k / g.kernel_w) * g.dil_h);
      tap_x_[q] = T((k % g.kernel_w) * g.dil_w);
    }
  }

  // Samples the points of `pixel` from its offsets (dy, dx pairs, indexed by point) and mask
  // (indexed by point; nullptr for none).
  void fill(const T* offset, const T* mask, int64_t pixel, int64_t first, int64_t count) {
    // Same operation order as the reference: offset + (tap + (pixel * stride - pad)).
    const T row_y = T((pixel / g_.out_w) * g_.stride_h - g_.pad_h);
    const T row_x = T((pixel % g_.out_w) * g_.stride_w - g_.pad_w);
    sample_points(offset + 2 * first, tap_y_.data() + first, tap_x_.data() + first, row_y, row_x, g_.height,
                  g_.width, count, y0_.data() + first, x0_.data() + first, valid_.data() + first,
                  ly_.data() + first, lx_.data() + first, weight_[0].data() + first,
                  weight_[1].data() + first, weight_[2].data() + first, weight_[3].data() + first);
    for (int64_t q = first; q < first + count; ++q) {
      scale_[q] = mask == nullptr ? T(1) : mask[q];
    }
  }

  // Corners and weights of point q (weights without the mask).
  DEFORMCONV_INLINE SamplePoint<T> point(int64_t q) const {
    SamplePoint<T> s;
    s.valid = valid_[q];
    const int64_t base = static_cast<int64_t>(y0_[q]) * g_.width + x0_[q];
    s.index[0] = base;
    s.index[1] = base + 1;
    s.index[2] = base + g_.width;
    s.index[3] = base + g_.width + 1;
    for (int j = 0; j < 4; ++j) {
      s.weight[j] = weight_[j][q];
    }
    return s;
  }

  // The mask value of point q (1 without a mask).
  DEFORMCONV_INLINE T scale(int64_t q) const { return scale_[q]; }

  // d weight / d y and d weight / d x of the corners of point q (0 for invalid corners).
  DEFORMCONV_INLINE void derivatives(int64_t q, T (&dy)[4], T (&dx)[4]) const {
    const T ly = ly_[q], lx = lx_[q], hy = T(1) - ly, hx = T(1) - lx;
    const T weight_dy[4] = {-hx, -lx, hx, lx};
    const T weight_dx[4] = {-hy, hy, -ly, ly};
    for (int j = 0; j < 4; ++j) {
      const bool valid = (valid_[q] >> j) & 1;
      dy[j] = valid ? weight_dy[j] : T(0);
      dx[j] = valid ? weight_dx[j] : T(0);
    }
  }

 private:
  const Geometry& g_;
  int64_t points_;
  std::vector<T> tap_y_, tap_x_;
  std::vector<int32_t> y0_, x0_, valid_;
  std::vector<T> ly_, lx_, scale_;
  std::vector<T> weight_[4];
};

}  // namespace deformconv
