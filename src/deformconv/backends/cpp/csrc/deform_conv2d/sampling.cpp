#include "sampling.h"

namespace deformconv {

template <typename T>
DEFORMCONV_VECTORIZE void sample_points(const T* __restrict__ offset, const T* __restrict__ tap_y,
                                        const T* __restrict__ tap_x, T row_y, T row_x, int64_t height,
                                        int64_t width, int64_t count, int32_t* __restrict__ y0,
                                        int32_t* __restrict__ x0, int32_t* __restrict__ valid,
                                        T* __restrict__ ly, T* __restrict__ lx, T* __restrict__ w0,
                                        T* __restrict__ w1, T* __restrict__ w2, T* __restrict__ w3) {
  const T h = T(height), w = T(width);
  const int32_t rows = static_cast<int32_t>(height), cols = static_cast<int32_t>(width);
  for (int64_t q = 0; q < count; ++q) {
    const T y = offset[2 * q] + (tap_y[q] + row_y);
    const T x = offset[2 * q + 1] + (tap_x[q] + row_x);
    // The "inside" test is false for NaN and Inf.
    const bool inside = (y > T(-1)) & (y < h) & (x > T(-1)) & (x < w);
    // Clamped into [-1, H] and [-1, W] (NaN to -1): finite, so the conversions below are
    // defined, and equal to (y, x) for the points inside.
    T yc = y > T(-1) ? y : T(-1);
    yc = yc < h ? yc : h;
    T xc = x > T(-1) ? x : T(-1);
    xc = xc < w ? xc : w;
    // floor, as truncation corrected for negative values (std::floor does not vectorise).
    const int32_t yt = static_cast<int32_t>(yc), xt = static_cast<int32_t>(xc);
    const int32_t top_row = yt - int32_t(T(yt) > yc), left_col = xt - int32_t(T(xt) > xc);
    const T fy = yc - T(top_row), fx = xc - T(left_col), gy = T(1) - fy, gx = T(1) - fx;
    const bool top = inside & (top_row >= 0), bottom = inside & (top_row + 1 < rows);
    const bool left = left_col >= 0, right = left_col + 1 < cols;
    y0[q] = top_row;
    x0[q] = left_col;
    ly[q] = fy;
    lx[q] = fx;
    valid[q] = int32_t(top & left) | (int32_t(top & right) << 1) | (int32_t(bottom & left) << 2) |
               (int32_t(bottom & right) << 3);
    // 0/1 factors rather than selects: the products are finite, and the loop stays branch-free.
    w0[q] = gy * gx * T(top & left);
    w1[q] = gy * fx * T(top & right);
    w2[q] = fy * gx * T(bottom & left);
    w3[q] = fy * fx * T(bottom & right);
  }
}

template void sample_points<float>(const float*, const float*, const float*, float, float, int64_t, int64_t,
                                   int64_t, int32_t*, int32_t*, int32_t*, float*, float*, float*, float*,
                                   float*, float*);
template void sample_points<double>(const double*, const double*, const double*, double, double, int64_t,
                                    int64_t, int64_t, int32_t*, int32_t*, int32_t*, double*, double*, double*,
                                    double*, double*, double*);

}  // namespace deformconv
