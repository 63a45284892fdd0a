// Depthwise deformable convolution (one input and one output channel per group): the
// weighted sum over kernel points is fused into the sampling, channels-last and vectorised
// over channels, instead of a column buffer and hundreds of 1-row matrix products.
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <vector>

#include "channel_loops.h"
#include "kernels.h"

namespace deformconv {

namespace {

// Channels per work item of the input/weight gradient (see input_grad.cpp).
constexpr int64_t kBlockChannels = 64;

template <typename T>
struct Args {
  const T* input;
  const T* offset;
  const T* mask;
  const T* weight;  // [K, C]
  const T* grad_output;
  const Geometry& g;
};

// Samples the points [first, first + count) of a row into the table.
template <typename T>
DEFORMCONV_INLINE void fill_row(const Args<T>& a, PointTable<T>& table, int64_t row, int64_t first,
                                int64_t count) {
  const int64_t points = a.g.offset_groups * a.g.kernel_points;
  table.fill(a.offset + row * 2 * points, a.mask == nullptr ? nullptr : a.mask + row * points,
             row % a.g.out_pixels, first, count);
}

// Corners of point q and their weights with the mask applied.
template <typename T>
DEFORMCONV_INLINE SamplePoint<T> masked_point(const PointTable<T>& table, int64_t q, T (&weight)[4]) {
  const auto s = table.point(q);
  const T scale = table.scale(q);
  for (int j = 0; j < 4; ++j) {
    weight[j] = s.weight[j] * scale;
  }
  return s;
}

template <typename T>
DEFORMCONV_VECTORIZE void forward_rows(const Args<T>& a, T* output, int64_t begin, int64_t end) {
  const Geometry& g = a.g;
  const int64_t K = g.kernel_points, C = g.channels, width = g.per_offset_group;
  std::vector<T> sampled(width);
  PointTable<T> table(g);
  for (int64_t row = begin; row < end; ++row) {
    const T* image = a.input + (row / g.out_pixels) * g.image_pixels() * C;
    fill_row(a, table, row, 0, g.offset_groups * K);
    T* out = output + row * C;
    std::fill(out, out + C, T(0));
    for (int64_t og = 0; og < g.offset_groups; ++og) {
      const int64_t c0 = og * width;
      for (int64_t k = 0; k < K; ++k) {
        T weight[4];
        const auto s = masked_point(table, og * K + k, weight);
        if (s.valid == 0) {
          continue;
        }
        blend(sampled.data(), image + c0, C, s, weight, width);
        const T* __restrict__ w = a.weight + k * C + c0;
        T* __restrict__ o = out + c0;
        for (int64_t i = 0; i < width; ++i) {
          o[i] += w[i] * sampled[i];
        }
      }
    }
  }
}

template <typename T>
DEFORMCONV_VECTORIZE void coordinate_rows(const Args<T>& a, T* grad_offset, T* grad_mask, int64_t begin,
                                          int64_t end) {
  const Geometry& g = a.g;
  const int64_t K = g.kernel_points, C = g.channels, width = g.per_offset_group;
  const int64_t points = g.offset_groups * K;
  std::vector<T> grad_columns(width);
  PointTable<T> table(g);
  for (int64_t row = begin; row < end; ++row) {
    const T* image = a.input + (row / g.out_pixels) * g.image_pixels() * C;
    fill_row(a, table, row, 0, points);
    for (int64_t og = 0; og < g.offset_groups; ++og) {
      const int64_t c0 = og * width;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t point = og * K + k;
        const auto s = table.point(point);
        T dots[4] = {T(0), T(0), T(0), T(0)};
        if (s.valid != 0) {
          // Gradient of the masked column: grad_output * weight.
          const T* __restrict__ go = a.grad_output + row * C + c0;
          const T* __restrict__ w = a.weight + k * C + c0;
          for (int64_t i = 0; i < width; ++i) {
            grad_columns[i] = go[i] * w[i];
          }
          corner_dots(grad_columns.data(), image + c0, C, s, width, dots);
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
        grad_offset[row * 2 * points + 2 * point] = scale * grad_y;
        grad_offset[row * 2 * points + 2 * point + 1] = scale * grad_x;
        if (grad_mask != nullptr) {
          grad_mask[row * points + point] = value;
        }
      }
    }
  }
}

struct WorkItem {
  int64_t image, offset_group, channel, length;
};

// grad_input of one image and block of channels, and that image's share of grad_weight for
// those channels (partial[K, C]); the item owns both.
template <typename T>
DEFORMCONV_VECTORIZE void input_weight_item(const Args<T>& a, const WorkItem& item, T* grad_input,
                                            T* partial) {
  const Geometry& g = a.g;
  const int64_t K = g.kernel_points, C = g.channels, P = g.out_pixels, c0 = item.channel,
                length = item.length;
  const T* image = a.input + item.image * g.image_pixels() * C + c0;
  T* image_grad = grad_input == nullptr ? nullptr : grad_input + item.image * g.image_pixels() * C + c0;
  std::vector<T> buffer(length);
  PointTable<T> table(g);
  for (int64_t p = 0; p < P; ++p) {
    const int64_t row = item.image * P + p;
    fill_row(a, table, row, item.offset_group * K, K);
    const T* __restrict__ go = a.grad_output + row * C + c0;
    for (int64_t k = 0; k < K; ++k) {
      T weight[4];
      const auto s = masked_point(table, item.offset_group * K + k, weight);
      if (s.valid == 0) {
        continue;
      }
      if (partial != nullptr) {
        blend(buffer.data(), image, C, s, weight, length);
        T* __restrict__ pw = partial + k * C + c0;
        for (int64_t i = 0; i < length; ++i) {
          pw[i] += go[i] * buffer[i];
        }
      }
      if (image_grad != nullptr) {
        const T* __restrict__ w = a.weight + k * C + c0;
        for (int64_t i = 0; i < length; ++i) {
          buffer[i] = go[i] * w[i];
        }
        scatter(image_grad, C, s, weight, buffer.data(), length);
      }
    }
  }
}

}  // namespace

template <typename T>
void depthwise_forward(const T* input, const T* offset, const T* mask, const T* weight, const Geometry& g,
                       int64_t images, T* output) {
  const Args<T> args{input, offset, mask, weight, nullptr, g};
  const int64_t grain = std::max<int64_t>(1, 16384 / (g.channels * g.kernel_points));
  torch::stable::parallel_for(0, images * g.out_pixels, grain,
                   [&](int64_t begin, int64_t end) { forward_rows(args, output, begin, end); });
}

template <typename T>
void depthwise_coordinate_grad(const T* input, const T* offset, const T* mask, const T* weight,
                               const T* grad_output, const Geometry& g, int64_t images, T* grad_offset,
                               T* grad_mask) {
  const Args<T> args{input, offset, mask, weight, grad_output, g};
  const int64_t grain = std::max<int64_t>(1, 16384 / (g.channels * g.kernel_points));
  torch::stable::parallel_for(0, images * g.out_pixels, grain, [&](int64_t begin, int64_t end) {
    coordinate_rows(args, grad_offset, grad_mask, begin, end);
  });
}

template <typename T>
void depthwise_input_weight_grad(const T* input, const T* offset, const T* mask, const T* weight,
                                 const T* grad_output, const Geometry& g, int64_t images, T* grad_input,
                                 T* grad_weight) {
  std::vector<WorkItem> items;
  for (int64_t n = 0; n < images; ++n) {
    for (int64_t og = 0; og < g.offset_groups; ++og) {
      for (int64_t c = 0; c < g.per_offset_group; c += kBlockChannels) {
        items.push_back(
            {n, og, og * g.per_offset_group + c, std::min(kBlockChannels, g.per_offset_group - c)});
      }
    }
  }
  const int64_t weight_size = g.kernel_points * g.channels;
  // Per-image partial sums of grad_weight, added up in image order below (deterministic).
  std::vector<T> partial(grad_weight == nullptr ? 0 : images * weight_size, T(0));
  const Args<T> args{input, offset, mask, weight, grad_output, g};
  torch::stable::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const WorkItem& item = items[i];
      input_weight_item(args, item, grad_input,
                        grad_weight == nullptr ? nullptr : partial.data() + item.image * weight_size);
    }
  });
  if (grad_weight != nullptr) {
    for (int64_t n = 0; n < images; ++n) {
      for (int64_t i = 0; i < weight_size; ++i) {
        grad_weight[i] += partial[n * weight_size + i];
      }
    }
  }
}

template void depthwise_forward<float>(const float*, const float*, const float*, const float*,
                                       const Geometry&, int64_t, float*);
template void depthwise_forward<double>(const double*, const double*, const double*, const double*,
                                        const Geometry&, int64_t, double*);
template void depthwise_coordinate_grad<float>(const float*, const float*, const float*, const float*,
                                               const float*, const Geometry&, int64_t, float*, float*);
template void depthwise_coordinate_grad<double>(const double*, const double*, const double*, const double*,
                                                const double*, const Geometry&, int64_t, double*, double*);
template void depthwise_input_weight_grad<float>(const float*, const float*, const float*, const float*,
                                                 const float*, const Geometry&, int64_t, float*, float*);
template void depthwise_input_weight_grad<double>(const double*, const double*, const double*, const double*,
                                                  const double*, const Geometry&, int64_t, double*, double*);

}  // namespace deformconv
