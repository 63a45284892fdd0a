#include <ATen/Dispatch.h>

#include <type_traits>

#include "chunk.h"
#include "kernels.h"

namespace deformconv {

at::Tensor to_channels_last(const at::Tensor& tensor, int64_t start, int64_t count, at::ScalarType acc) {
  const at::Tensor images = tensor.narrow(0, start, count);
  const at::Tensor view = images.permute({0, 2, 3, 1});
  if (view.is_contiguous()) {
    return view.to(acc);  // same strides: still contiguous channels-last
  }
  const at::Tensor source = images.contiguous();
  at::Tensor target = at::empty(view.sizes(), tensor.options().dtype(acc));
  const int64_t channels = images.size(1), pixels = images.size(2) * images.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, source.scalar_type(), "to_channels_last", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    transpose_images<scalar_t, acc_t>(source.const_data_ptr<scalar_t>(), count, channels, pixels,
                                      target.mutable_data_ptr<acc_t>());
  });
  return target;
}

void from_channels_last(const at::Tensor& source, const at::Tensor& target) {
  TORCH_CHECK(source.is_contiguous() && target.is_contiguous(),
              "from_channels_last needs contiguous tensors");
  const int64_t count = target.size(0), channels = target.size(1), pixels = target.size(2) * target.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "from_channels_last", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    transpose_images<acc_t, scalar_t>(source.const_data_ptr<acc_t>(), count, pixels, channels,
                                      target.mutable_data_ptr<scalar_t>());
  });
}

}  // namespace deformconv
