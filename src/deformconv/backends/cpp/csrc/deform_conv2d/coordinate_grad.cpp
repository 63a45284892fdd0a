#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <vector>

#include "channel_loops.h"
#include "kernels.h"

namespace deformconv {

namespace {

template <typename T>
struct Args {
  const T* input;
  const T* offset;
  const T* mask;
  const T* grad_columns;
  const Geometry& g;
  const std::vector<ChannelRange>& ranges;  // one per offset group
  int64_t row_begin;
  T* grad_offset;
  T* grad_mask;
};

template <typename T>
DEFORMCONV_VECTORIZE void coordinate_rows(const Args<T>& a, int64_t begin, int64_t end) {
  const Geometry& g = a.g;
  const int64_t K = g.kernel_points, P = g.out_pixels, C = g.channels;
  const int64_t points = g.offset_groups * K;
  std::vector<T> buffer(K * g.per_offset_group);
  PointTable<T> table(g);
  for (int64_t row = begin; row < end; ++row) {
    const T* image = a.input + (row / P) * g.image_pixels() * C;
    table.fill(a.offset + row * 2 * points, a.mask == nullptr ? nullptr : a.mask + row * points, row % P, 0,
               points);
    const T* row_grad = a.grad_columns + (row - a.row_begin) * g.group_columns();
    for (const ChannelRange& range : a.ranges) {
      const auto grads = gather_columns(row_grad, range, K, buffer.data());
      for (int64_t k = 0; k < K; ++k) {
        const int64_t point = range.offset_group * K + k;
        const auto s = table.point(point);
        // dots[j] = sum over the group's channels of grad_column * corner value.
        T dots[4] = {T(0), T(0), T(0), T(0)};
        if (s.valid != 0) {
          corner_dots(grads.data + k * grads.stride, image + range.channel, C, s, range.length, dots);
        }
        T weight_dy[4], weight_dx[4];
        table.derivatives(point, weight_dy, weight_dx);
        T value = T(0), grad_y = T(0), grad_x = T(0);
        for (int j = 0; j < 4; ++j) {
          value += s.weight[j] * dots[j];
          grad_y += weight_dy[j] * dots[j];
          grad_x += weight_dx[j] * dots[j];
        }
        const T scale = table.scale(point);
        a.grad_offset[row * 2 * points + 2 * point] = scale * grad_y;
        a.grad_offset[row * 2 * points + 2 * point + 1] = scale * grad_x;
        if (a.grad_mask != nullptr) {
          a.grad_mask[row * points + point] = value;
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void coordinate_grad(const T* input, const T* offset, const T* mask, const T* grad_columns, const Geometry& g,
                     int64_t row_begin, int64_t row_end, T* grad_offset, T* grad_mask) {
  const auto ranges = channel_ranges(g, row_end - row_begin, g.per_offset_group);
  const Args<T> args{input, offset, mask, grad_columns, g, ranges, row_begin, grad_offset, grad_mask};
  const int64_t grain = std::max<int64_t>(1, 16384 / (g.channels * g.kernel_points));
  torch::stable::parallel_for(row_begin, row_end, grain,
                   [&](int64_t begin, int64_t end) { coordinate_rows(args, begin, end); });
}

template void coordinate_grad<float>(const float*, const float*, const float*, const float*, const Geometry&,
                                     int64_t, int64_t, float*, float*);
template void coordinate_grad<double>(const double*, const double*, const double*, const double*,
                                      const Geometry&, int64_t, int64_t, double*, double*);

}  // namespace deformconv
