// CPU kernels of uniform_, normal_ and trunc_normal_, and the raw Philox stream.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../checks.h"
#include "../transforms.h"
#include "../trunc_normal_plan.h"
#include "random_fill.h"

namespace torchinit::cpu {
namespace {

void uniform_cpu(at::Tensor& self, double a, double b,
                        std::optional<at::Generator> generator) {
  check_uniform_args(self, a, b);
  if (self.numel() == 0) return;
  const PhiloxKey key = draw_philox_key(generator);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, self.scalar_type(), "uniform_", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Uniform<acc_t> dist{static_cast<acc_t>(a), static_cast<acc_t>(b) - static_cast<acc_t>(a)};
    random_fill<scalar_t, acc_t>(self, dist, key);
  });
}

void normal_cpu(at::Tensor& self, double mean, double std,
                       std::optional<at::Generator> generator) {
  check_normal_args(self, std);
  if (self.numel() == 0) return;
  const PhiloxKey key = draw_philox_key(generator);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, self.scalar_type(), "normal_", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Normal<acc_t> dist{static_cast<acc_t>(mean), static_cast<acc_t>(std)};
    random_fill<scalar_t, acc_t>(self, dist, key);
  });
}

void trunc_normal_cpu(at::Tensor& self, double mean, double std, double a, double b,
                      std::optional<at::Generator> generator) {
  const TruncNormalPlan plan = plan_trunc_normal(self, mean, std, a, b);
  if (self.numel() == 0) return;
  const PhiloxKey key = draw_philox_key(generator);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, self.scalar_type(), "trunc_normal_", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto lo = static_cast<acc_t>(plan.lo);
    const auto hi = static_cast<acc_t>(plan.hi);
    switch (plan.method) {
      case TruncNormalPlan::Method::kConstant:
        fill_logical<scalar_t, acc_t>(self, [&](acc_t* dst, int64_t begin, int64_t end) {
          std::fill(dst, dst + (end - begin), lo);
        });
        break;
      case TruncNormalPlan::Method::kInverse: {
        const auto fill = [&](auto quantile_precision) {
          using Q = decltype(quantile_precision);
          const TruncNormal<acc_t, Q> dist{plan.lower_cdf, plan.upper_sf, plan.mass,
                                           static_cast<acc_t>(mean), static_cast<acc_t>(std), lo, hi};
          random_fill<scalar_t, acc_t>(self, dist, key);
        };
        plan.double_quantile ? fill(double()) : fill(acc_t());
        break;
      }
      case TruncNormalPlan::Method::kWide: {
        const TruncNormalWide<acc_t> dist{
            {static_cast<acc_t>(mean), static_cast<acc_t>(std)},
            static_cast<acc_t>(plan.accept_lo), static_cast<acc_t>(plan.accept_hi), lo, hi,
            {plan.lower_cdf, plan.upper_sf, plan.mass, static_cast<acc_t>(mean),
             static_cast<acc_t>(std), lo, hi}};
        random_fill_resampled<scalar_t, acc_t>(self, dist, key);
        break;
      }
      case TruncNormalPlan::Method::kFarTail: {
        const TruncNormalFarTail<acc_t> dist{plan.far_alpha, plan.far_trunc, plan.far_sign,
                                             mean, std, lo, hi};
        fill_logical<scalar_t, acc_t>(self, [&](acc_t* dst, int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) dst[i - begin] = dist.sample(key, i);
        });
        break;
      }
    }
  });
}

at::Tensor philox_blocks(int64_t key, int64_t offset, int64_t num_blocks) {
  TORCH_CHECK_VALUE(num_blocks >= 0, "philox_blocks: num_blocks must be >= 0, got ", num_blocks);
  at::Tensor out = at::empty({num_blocks, 4}, at::kInt);
  auto* words = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  const PhiloxKey k{static_cast<uint64_t>(key), static_cast<uint64_t>(offset)};
  at::parallel_for(0, num_blocks, kGrain / 4, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const PhiloxBlock block = philox4x32_10(static_cast<uint64_t>(b), k);
      std::copy(block.w, block.w + 4, words + 4 * b);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CPU, m) {
  m.impl("uniform_", &uniform_cpu);
  m.impl("normal_", &normal_cpu);
  m.impl("trunc_normal_", &trunc_normal_cpu);
}

TORCH_LIBRARY_IMPL(torchinit_ext, CompositeExplicitAutograd, m) {
  m.impl("philox_blocks", &philox_blocks);
}

}  // namespace torchinit::cpu
