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
  const Geometry& g;
  const std::vector<ChannelRange>& ranges;  // one per offset group
  int64_t row_begin;
  T* columns;
};

template <typename T>
DEFORMCONV_VECTORIZE void sample_rows(const Args<T>& a, int64_t begin, int64_t end) {
  const Geometry& g = a.g;
  const int64_t K = g.kernel_points, P = g.out_pixels, C = g.channels;
  const int64_t points = g.offset_groups * K;
  std::vector<T> buffer(K * g.per_offset_group);
  PointTable<T> table(g);
  for (int64_t row = begin; row < end; ++row) {
    const T* image = a.input + (row / P) * g.image_pixels() * C;
    table.fill(a.offset + row * 2 * points, a.mask == nullptr ? nullptr : a.mask + row * points, row % P, 0,
               points);
    T* row_columns = a.columns + (row - a.row_begin) * g.group_columns();
    for (const ChannelRange& range : a.ranges) {
      const auto target = column_target(row_columns, range, buffer.data());
      for (int64_t k = 0; k < K; ++k) {
        const int64_t point = range.offset_group * K + k;
        const auto s = table.point(point);
        const T scale = table.scale(point);
        const T weight[4] = {s.weight[0] * scale, s.weight[1] * scale, s.weight[2] * scale,
                             s.weight[3] * scale};
        blend(target.data + k * target.stride, image + range.channel, C, s, weight, range.length);
      }
      put_columns(buffer.data(), range, K, row_columns);
    }
  }
}

}  // namespace

template <typename T>
void sample_columns(const T* input, const T* offset, const T* mask, const Geometry& g, int64_t row_begin,
                    int64_t row_end, T* columns) {
  const auto ranges = channel_ranges(g, row_end - row_begin, g.per_offset_group);
  const Args<T> args{input, offset, mask, g, ranges, row_begin, columns};
  // Enough rows per task to amortise the scheduling (about 16K column entries).
  const int64_t grain = std::max<int64_t>(1, 16384 / (g.channels * g.kernel_points));
  torch::stable::parallel_for(row_begin, row_end, grain,
                   [&](int64_t begin, int64_t end) { sample_rows(args, begin, end); });
}

template void sample_columns<float>(const float*, const float*, const float*, const Geometry&, int64_t,
                                    int64_t, float*);
template void sample_columns<double>(const double*, const double*, const double*, const Geometry&, int64_t,
                                     int64_t, double*);

}  // namespace deformconv
