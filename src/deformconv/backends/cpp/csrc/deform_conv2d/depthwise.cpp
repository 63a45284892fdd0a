// Depthwise deformable convolution (one input and one output channel per group): the
// weighted sum over kernel points is fused into the sampling, channels-last and vectorised
// over channels, instead of a column buffer and hundreds of 1-row matrix products.
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "channel_loops.h"
#include "kernels.h"

namespace deformconv {

namespace {

// Channels per work item of the backward (see input_grad.cpp).
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

struct WorkItem {
  int64_t image, offset_group, channel, length, block;  // block: the item's index in its offset group
};

// Where the work items of an offset group and image leave their partial dot products:
// [images][offset groups][blocks][P][K][4] (see coordinate_rows).
struct DotLayout {
  int64_t blocks, per_block;

  int64_t base(const Geometry& g, int64_t image, int64_t offset_group, int64_t block) const {
    return ((image * g.offset_groups + offset_group) * blocks + block) * per_block;
  }
};

// The backward of one image and block of channels, reading each sample's corners once: that
// block's grad_input (kScatter) and share of grad_weight (kSample: partial[K, C]), which the
// item owns, and the block's partial dot products for the offset and mask gradients (kDots).
template <typename T, bool kSample, bool kDots, bool kScatter>
DEFORMCONV_VECTORIZE void backward_item(const Args<T>& a, const WorkItem& item, T* grad_input, T* partial,
                                        T* dots, const DotLayout& layout) {
  const Geometry& g = a.g;
  const int64_t K = g.kernel_points, C = g.channels, P = g.out_pixels, c0 = item.channel,
                length = item.length;
  const T* image = a.input + item.image * g.image_pixels() * C + c0;
  T* image_grad = kScatter ? grad_input + item.image * g.image_pixels() * C + c0 : nullptr;
  T* item_dots = kDots ? dots + layout.base(g, item.image, item.offset_group, item.block) : nullptr;
  std::vector<T> grad(length), sampled(length);
  PointTable<T> table(g);
  for (int64_t p = 0; p < P; ++p) {
    const int64_t row = item.image * P + p;
    fill_row(a, table, row, item.offset_group * K, K);
    const T* __restrict__ go = a.grad_output + row * C + c0;
    for (int64_t k = 0; k < K; ++k) {
      T weight[4];
      const auto s = masked_point(table, item.offset_group * K + k, weight);
      T point_dots[4] = {T(0), T(0), T(0), T(0)};
      const auto store_dots = [&] {
        if constexpr (kDots) {
          for (int j = 0; j < 4; ++j) {
            item_dots[(p * K + k) * 4 + j] = point_dots[j];
          }
        }
      };
      if constexpr (kSample && kDots && kScatter) {
        // Every gradient wanted and the point inside the image (most points): one pass.
        if (s.valid == SamplePoint<T>::kAllValid) {
          depthwise_point_inside(image, image_grad, C, s, weight, go, a.weight + k * C + c0, partial + k * C + c0,
                                 length, point_dots);
          store_dots();
          continue;
        }
      }
      if (s.valid != 0) {
        // The gradient of the masked sample: grad_output * weight.
        const T* __restrict__ w = a.weight + k * C + c0;
        for (int64_t i = 0; i < length; ++i) {
          grad[i] = go[i] * w[i];
        }
        sample_back<T, kSample, kDots, kScatter>(image, image_grad, C, s, weight, grad.data(), length,
                                                 sampled.data(), point_dots);
        if constexpr (kSample) {
          T* __restrict__ pw = partial + k * C + c0;
          for (int64_t i = 0; i < length; ++i) {
            pw[i] += go[i] * sampled[i];
          }
        }
      }
      store_dots();
    }
  }
}

// Offset and mask gradients of rows [begin, end) from the blocks' partial dot products,
// added in block order.
template <typename T>
DEFORMCONV_VECTORIZE void coordinate_rows(const Args<T>& a, const T* dots, const DotLayout& layout,
                                          T* grad_offset, T* grad_mask, int64_t begin, int64_t end) {
  const Geometry& g = a.g;
  const int64_t K = g.kernel_points, P = g.out_pixels;
  const int64_t points = g.offset_groups * K;
  PointTable<T> table(g);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t image = row / P, p = row % P;
    fill_row(a, table, row, 0, points);
    for (int64_t og = 0; og < g.offset_groups; ++og) {
      for (int64_t k = 0; k < K; ++k) {
        const int64_t point = og * K + k;
        T sums[4] = {T(0), T(0), T(0), T(0)};
        for (int64_t block = 0; block < layout.blocks; ++block) {
          const T* d = dots + layout.base(g, image, og, block) + (p * K + k) * 4;
          for (int j = 0; j < 4; ++j) {
            sums[j] += d[j];
          }
        }
        const auto s = table.point(point);
        T weight_dy[4], weight_dx[4];
        table.derivatives(point, weight_dy, weight_dx);
        T value = T(0), grad_y = T(0), grad_x = T(0);
        for (int j = 0; j < 4; ++j) {
          value += s.weight[j] * sums[j];
          grad_y += weight_dy[j] * sums[j];
          grad_x += weight_dx[j] * sums[j];
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

// Runs backward_item<T, kSample, kDots, kScatter> with the flags known at run time.
template <typename T>
void run_item(bool sample, bool dots, bool scatter, const Args<T>& a, const WorkItem& item, T* grad_input,
              T* partial, T* dot_data, const DotLayout& layout) {
  const auto with_scatter = [&](auto s, auto d) {
    if (scatter) {
      backward_item<T, decltype(s)::value, decltype(d)::value, true>(a, item, grad_input, partial, dot_data, layout);
    } else {
      backward_item<T, decltype(s)::value, decltype(d)::value, false>(a, item, grad_input, partial, dot_data, layout);
    }
  };
  const auto with_dots = [&](auto s) {
    if (dots) {
      with_scatter(s, std::true_type{});
    } else {
      with_scatter(s, std::false_type{});
    }
  };
  if (sample) {
    with_dots(std::true_type{});
  } else {
    with_dots(std::false_type{});
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
void depthwise_backward(const T* input, const T* offset, const T* mask, const T* weight, const T* grad_output,
                        const Geometry& g, int64_t images, T* grad_input, T* grad_weight, T* grad_offset,
                        T* grad_mask) {
  if (grad_input == nullptr && grad_weight == nullptr && grad_offset == nullptr) {
    return;
  }
  const int64_t blocks = (g.per_offset_group + kBlockChannels - 1) / kBlockChannels;
  std::vector<WorkItem> items;
  for (int64_t n = 0; n < images; ++n) {
    for (int64_t og = 0; og < g.offset_groups; ++og) {
      for (int64_t block = 0; block < blocks; ++block) {
        const int64_t c = block * kBlockChannels;
        items.push_back({n, og, og * g.per_offset_group + c, std::min(kBlockChannels, g.per_offset_group - c),
                         block});
      }
    }
  }
  const int64_t weight_size = g.kernel_points * g.channels;
  const DotLayout layout{blocks, g.out_pixels * g.kernel_points * 4};
  // Per-image partial sums of grad_weight and per-block partial dot products, added up in a
  // fixed order below (deterministic whatever the threads).
  std::vector<T> partial(grad_weight == nullptr ? 0 : images * weight_size, T(0));
  std::vector<T> dots(grad_offset == nullptr ? 0 : images * g.offset_groups * blocks * layout.per_block);
  const Args<T> args{input, offset, mask, weight, grad_output, g};
  torch::stable::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const WorkItem& item = items[i];
      run_item(grad_weight != nullptr, grad_offset != nullptr, grad_input != nullptr, args, item, grad_input,
               grad_weight == nullptr ? nullptr : partial.data() + item.image * weight_size, dots.data(), layout);
    }
  });
  if (grad_offset != nullptr) {
    const int64_t grain = std::max<int64_t>(1, 16384 / (g.offset_groups * g.kernel_points * 16));
    torch::stable::parallel_for(0, images * g.out_pixels, grain, [&](int64_t begin, int64_t end) {
      coordinate_rows(args, dots.data(), layout, grad_offset, grad_mask, begin, end);
    });
  }
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
template void depthwise_backward<float>(const float*, const float*, const float*, const float*, const float*,
                                        const Geometry&, int64_t, float*, float*, float*, float*);
template void depthwise_backward<double>(const double*, const double*, const double*, const double*,
                                         const double*, const Geometry&, int64_t, double*, double*, double*,
                                         double*);

}  // namespace deformconv
