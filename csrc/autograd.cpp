// Autograd registration. Fills are not differentiable, but they write in place: the version
// counter of every written argument is bumped (so autograd rejects stale saved tensors), and a
// call on a tensor that requires grad outside no_grad is refused clearly. (Stock's fallbacks
// bump only aliased *returns*, and these ops return nothing.)
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <vector>

namespace {

void fill_without_grad(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                       torch::jit::Stack* stack) {
  const auto& args = op.schema().arguments();
  const size_t first = stack->size() - args.size();
  std::vector<at::Tensor> written;
  for (size_t i = 0; i < args.size(); ++i) {
    const auto* alias = args[i].alias_info();
    if (!alias || !alias->isWrite()) continue;
    const c10::IValue& arg = (*stack)[first + i];
    if (arg.isTensorList()) {
      for (const at::Tensor& t : arg.toTensorVector()) written.push_back(t);
    } else {
      written.push_back(arg.toTensor());
    }
  }
  for (const auto& t : written) {
    TORCH_CHECK(!(at::GradMode::is_enabled() && t.requires_grad()), op.schema().name(),
                ": fills are not differentiable; call it under torch.no_grad() on a tensor "
                "that requires grad");
  }
  op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  for (const auto& t : written) torch::autograd::impl::bump_version(t);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, Autograd, m) {
  for (const char* op : {"uniform_", "normal_", "trunc_normal_", "sparse_", "constant_", "eye_",
                         "dirac_", "orthogonal_", "orthogonal_batch_", "fill_many_"}) {
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&fill_without_grad>());
  }
}
