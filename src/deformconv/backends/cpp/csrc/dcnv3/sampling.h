// Where DCNv3 and DCNv4 sample (see deformconv/ops/dcnv3/geometry.py), for the CPU kernels: the
// sizes of a call, where each sample point's offsets and weight live, and its bilinear corners.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace deformconv::dcn {

// Sizes and hyper-parameters of one call, and the layout of offsets and weights: the offset pair
// (dx, dy) of output pixel q, group g, point p is at offset[offset_start + q*offset_pixel_stride
// + g*offset_group_stride + 2*p], its weight at mask[mask_start + q*mask_pixel_stride +
// g*mask_group_stride + p]. DCNv3 keeps them in two tensors, DCNv4 packs both in one.
struct Geometry {
  int64_t batch, height, width, channels, group, group_channels;
  int64_t out_h, out_w, points;
  int64_t origin_x, origin_y, stride_h, stride_w;
  double offset_scale;
  int64_t offset_start, offset_pixel_stride, offset_group_stride;
  int64_t mask_start, mask_pixel_stride, mask_group_stride;
  std::vector<double> tap_x, tap_y;  // per point, x-major, the centre left out with remove_center

  int64_t pixels() const { return out_h * out_w; }
  // Where the points of output pixel q (over the batch) and group grp start in offset and mask.
  int64_t offset_at(int64_t q, int64_t grp) const {
    return offset_start + q * offset_pixel_stride + grp * offset_group_stride;
  }
  int64_t mask_at(int64_t q, int64_t grp) const { return mask_start + q * mask_pixel_stride + grp * mask_group_stride; }

  // Output pixels per parallel chunk: small problems run on one thread, where waking the others
  // would cost more than the work.
  int64_t pixel_grain() const {
    const int64_t per_pixel = points * channels;
    return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, per_pixel));
  }
};

// The four bilinear corners of one sample point: their input pixel (y*W + x) and weight, with the
// derivatives of the weight with respect to the point's x and y. A corner outside the image has
// weight 0 and pixel 0, so it can be skipped or read harmlessly.
template <typename acc_t>
struct Corners {
  int64_t pixel[4];
  bool valid[4];
  acc_t weight[4], weight_dx[4], weight_dy[4];
  bool any;  // false when the point reads 0 (outside -1 < x < W, -1 < y < H, or NaN)
};

template <typename acc_t>
inline Corners<acc_t> corners(acc_t x, acc_t y, int64_t height, int64_t width) {
  Corners<acc_t> c{};
  // Written as "inside" so that NaN and Inf fall outside and never reach the integer conversion.
  c.any = x > acc_t(-1) && x < acc_t(width) && y > acc_t(-1) && y < acc_t(height);
  if (!c.any) return c;
  // floor() without a library call (x and y are finite and > -1 here): truncate, then step down.
  int64_t x0 = static_cast<int64_t>(x), y0 = static_cast<int64_t>(y);
  x0 -= acc_t(x0) > x;
  y0 -= acc_t(y0) > y;
  const acc_t fx = acc_t(x0), fy = acc_t(y0);
  const acc_t lx = x - fx, ly = y - fy, hx = acc_t(1) - lx, hy = acc_t(1) - ly;
  const int64_t cx[4] = {x0, x0 + 1, x0, x0 + 1};
  const int64_t cy[4] = {y0, y0, y0 + 1, y0 + 1};
  const acc_t w[4] = {hx * hy, lx * hy, hx * ly, lx * ly};
  const acc_t wdx[4] = {-hy, hy, -ly, ly};
  const acc_t wdy[4] = {-hx, -lx, hx, lx};
  for (int k = 0; k < 4; ++k) {
    const bool valid = cx[k] >= 0 && cx[k] < width && cy[k] >= 0 && cy[k] < height;
    c.valid[k] = valid;
    c.pixel[k] = valid ? cy[k] * width + cx[k] : 0;
    c.weight[k] = valid ? w[k] : acc_t(0);
    c.weight_dx[k] = valid ? wdx[k] : acc_t(0);
    c.weight_dy[k] = valid ? wdy[k] : acc_t(0);
  }
  return c;
}

// Pixel coordinates (x, y) of point p of output pixel (oy, ox), given its offset pair.
template <typename acc_t>
inline void location(const Geometry& g, int64_t oy, int64_t ox, int64_t p, acc_t dx, acc_t dy, acc_t& x, acc_t& y) {
  const acc_t scale = acc_t(g.offset_scale);
  x = acc_t(ox * g.stride_w + g.origin_x) + scale * (acc_t(g.tap_x[p]) + dx);
  y = acc_t(oy * g.stride_h + g.origin_y) + scale * (acc_t(g.tap_y[p]) + dy);
}

// The corners of point p of output pixel (oy, ox), whose offset pair is at pair[0], pair[1].
template <typename scalar_t, typename acc_t>
inline Corners<acc_t> point_corners(const Geometry& g, const scalar_t* pair, int64_t oy, int64_t ox, int64_t p) {
  acc_t x, y;
  location(g, oy, ox, p, acc_t(pair[0]), acc_t(pair[1]), x, y);
  return corners(x, y, g.height, g.width);
}

}  // namespace deformconv::dcn
