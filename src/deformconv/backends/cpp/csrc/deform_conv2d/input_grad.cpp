#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <vector>

#include "channel_loops.h"
#include "kernels.h"

namespace deformconv {

namespace {

// Channels per work item: whole cache lines of grad_input per pixel, several vector widths.
constexpr int64_t kBlockChannels = 64;

template <typename T>
struct Args {
  const T* offset;
  const T* mask;
  const T* grad_columns;
  const Geometry& g;
  int64_t row_begin, row_end;
  T* grad_input;
};

// Adds to grad_input the contributions of one image's sample points (those among the rows)
// to one range of channels.
template <typename T>
DEFORMCONV_VECTORIZE void scatter_range(const Args<T>& a, int64_t image, const ChannelRange& range) {
  const Geometry& g = a.g;
  const int64_t K = g.kernel_points, P = g.out_pixels, C = g.channels;
  const int64_t points = g.offset_groups * K;
  std::vector<T> buffer(K * range.length);
  PointTable<T> table(g);
  T* image_grad = a.grad_input + image * g.image_pixels() * C + range.channel;
  const int64_t first = std::max(image * P, a.row_begin), last = std::min((image + 1) * P, a.row_end);
  for (int64_t row = first; row < last; ++row) {
    // Only the kernel points of this range's offset group.
    table.fill(a.offset + row * 2 * points, a.mask == nullptr ? nullptr : a.mask + row * points,
               row - image * P, range.offset_group * K, K);
    const auto grads =
        gather_columns(a.grad_columns + (row - a.row_begin) * g.group_columns(), range, K, buffer.data());
    for (int64_t k = 0; k < K; ++k) {
      const int64_t point = range.offset_group * K + k;
      const auto s = table.point(point);
      if (s.valid == 0) {
        continue;
      }
      const T scale = table.scale(point);
      const T weight[4] = {s.weight[0] * scale, s.weight[1] * scale, s.weight[2] * scale,
                           s.weight[3] * scale};
      scatter(image_grad, C, s, weight, grads.data + k * grads.stride, range.length);
    }
  }
}

}  // namespace

template <typename T>
void input_grad(const T* offset, const T* mask, const T* grad_columns, const Geometry& g, int64_t row_begin,
                int64_t row_end, T* grad_input) {
  // Each work item is one image and one range of channels: it alone writes those channels of
  // that image's grad_input, visiting the sample points in a fixed order (by row), so there
  // are no atomics and the sums are the same whatever the number of threads.
  if (row_begin >= row_end) {
    return;
  }
  const auto ranges = channel_ranges(g, row_end - row_begin, kBlockChannels);
  const int64_t per_image = static_cast<int64_t>(ranges.size());
  const int64_t first_image = row_begin / g.out_pixels;
  const int64_t images = (row_end - 1) / g.out_pixels + 1 - first_image;
  const Args<T> args{offset, mask, grad_columns, g, row_begin, row_end, grad_input};
  torch::stable::parallel_for(0, images * per_image, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      scatter_range(args, first_image + item / per_image, ranges[item % per_image]);
    }
  });
}

template void input_grad<float>(const float*, const float*, const float*, const Geometry&, int64_t, int64_t,
                                float*);
template void input_grad<double>(const double*, const double*, const double*, const Geometry&, int64_t,
                                 int64_t, double*);

}  // namespace deformconv
