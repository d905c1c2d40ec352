// The layers above the kernels, as ATen has them for its own in-place ops. Fills are not
// differentiable but write in place, and the ops return nothing (see ops.cpp), so torch's
// generic fallbacks, which look for the written tensor among the returns, can't serve them:
// - Autograd: a call on a tensor that requires grad outside no_grad is refused clearly.
// - ADInplaceOrView: inference tensors are refused outside InferenceMode as ATen refuses them,
//   before anything is written, and every written tensor's version counter is bumped after.
// - Negative / Conjugate: a view with a math bit (z.conj(), z.conj().imag) is filled through a
//   plain temporary of its layout, then copied in, which applies the bit.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty_strided.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <vector>

#include "../plan/op_table.h"

namespace {

// Calls visit(tensor) for every tensor the op writes: each Tensor(a!) argument, or each tensor of
// a Tensor(a!)[] list, on the stack of a boxed call.
template <typename Visit>
void for_each_written(const c10::OperatorHandle& op, torch::jit::Stack* stack, const Visit& visit) {
  const auto& args = op.schema().arguments();
  const size_t first = stack->size() - args.size();
  for (size_t i = 0; i < args.size(); ++i) {
    const auto* alias = args[i].alias_info();
    if (!alias || !alias->isWrite()) continue;
    c10::IValue& arg = (*stack)[first + i];
    if (arg.isTensorList()) {
      auto list = arg.toTensorList();
      for (size_t k = 0; k < list.size(); ++k) {
        at::Tensor t = list.get(k);
        if (visit(t)) list.set(k, t);
      }
    } else {
      at::Tensor t = arg.toTensor();
      if (visit(t)) arg = t;
    }
  }
}

void refuse_differentiable(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                           torch::jit::Stack* stack) {
  for_each_written(op, stack, [&](const at::Tensor& t) {
    TORCH_CHECK(!(at::GradMode::is_enabled() && t.requires_grad()), op.schema().name(),
                ": fills are not differentiable; call it under torch.no_grad() on a tensor "
                "that requires grad");
    return false;
  });
  op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
}

void bump_versions(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                   torch::jit::Stack* stack) {
  std::vector<at::Tensor> written;
  for_each_written(op, stack, [&](const at::Tensor& t) {
    // Inference tensors have no version counter: bumping one outside InferenceMode raises
    // ATen's own error, here before any element is written.
    if (t.is_inference() && !c10::InferenceMode::is_enabled()) {
      torch::autograd::impl::bump_version(t);
    }
    written.push_back(t);
    return false;
  });
  op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  for (const auto& t : written) torch::autograd::impl::bump_version(t);
}

void fill_through_plain_temporaries(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                                    torch::jit::Stack* stack) {
  std::vector<std::pair<at::Tensor, at::Tensor>> views;  // (view with a math bit, temporary)
  for_each_written(op, stack, [&](at::Tensor& t) {
    if (!t.is_conj() && !t.is_neg()) return false;
    // Same sizes and strides, so the kernel's checks (overlap included) see the view's layout.
    at::Tensor temporary = at::empty_strided(t.sizes(), t.strides(), t.options());
    views.emplace_back(t, temporary);
    t = temporary;
    return true;
  });
  // Below both keys: Negative is dispatched before Conjugate.
  op.redispatchBoxed(
      keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, c10::DispatchKey::Conjugate),
      stack);
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // versions are bumped above
  for (auto& [view, temporary] : views) view.copy_(temporary);
}

// Every op of the table that writes a tensor.
template <c10::BoxedKernel::BoxedKernelFunction_withDispatchKeys* Layer>
void register_layer(torch::Library& m) {
  for (const torchinit::OpSpec& op : torchinit::kOpTable) {
    if (op.kind == torchinit::OpKind::kHelper) continue;
    m.impl(torchinit::op_name(op).c_str(), torch::CppFunction::makeFromBoxedFunction<Layer>());
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, Autograd, m) {
  register_layer<&refuse_differentiable>(m);
}

TORCH_LIBRARY_IMPL(torchinit_ext, ADInplaceOrView, m) {
  register_layer<&bump_versions>(m);
}

TORCH_LIBRARY_IMPL(torchinit_ext, Negative, m) {
  register_layer<&fill_through_plain_temporaries>(m);
}

TORCH_LIBRARY_IMPL(torchinit_ext, Conjugate, m) {
  register_layer<&fill_through_plain_temporaries>(m);
}
