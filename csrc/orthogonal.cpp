// orthogonal_ and orthogonal_batch_: Haar-distributed (semi-)orthogonal matrices without a QR
// factorization. Householder QR of a Gaussian matrix sees, by rotation invariance, a fresh
// Gaussian vector of length m - j at step j (Stewart 1980, "The efficient generation of random
// orthogonal matrices"), so the reflectors are built straight from Gaussian columns and applied
// the way LAPACK's orgqr does; fixing the signs by diag(R) makes Q Haar (Mezzadri 2007). About
// half the flops of geqrf + orgqr, all of them in batched at:: ops, so the same code serves a
// batch of matrices on any device.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "checks.h"

namespace torchinit {
namespace {

// Reflectors per compact-WY block: 64 measured fastest of 32/64/128/256 on 1024x1024 and
// 4096x512 float32 (2-core Xeon, MKL); smaller blocks starve the GEMMs, larger ones spend more
// in the triangular solve.
constexpr int64_t kBlock = 64;

// The project's own normal fill, through the dispatcher so the values obey the RNG contract on
// whichever backend the tensor lives.
void fill_standard_normal(at::Tensor& out, const std::optional<at::Generator>& generator) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("torchinit_ext::normal_", "")
          .typed<void(at::Tensor&, double, double, std::optional<at::Generator>)>();
  op.call(out, 0.0, 1.0, generator);
}

// Column j of `gaussian` (rows >= j) becomes the unnormalized reflector v_j = x_j + s_j ||x_j|| e_1
// with s_j = sign(x_j[0]) (+1 at 0; no cancellation), zeros above row j; v_j = e_1 where x_j = 0.
// Returns s_j, shape (batch, n): R_jj = -s_j ||x_j||.
at::Tensor make_reflectors_in_place(at::Tensor& gaussian) {
  gaussian.tril_();
  const at::Tensor norms = at::linalg_vector_norm(gaussian, 2, at::IntArrayRef{-2});
  at::Tensor heads = gaussian.diagonal(0, -2, -1);
  const at::Tensor signs = at::ones_like(norms).masked_fill_(heads < 0, -1.0);
  heads.add_(signs * norms).masked_fill_(norms == 0, 1.0);
  return signs;
}

// Q = H_0 H_1 ... H_{n-1} [I_n; 0] for the reflectors in the columns of `reflectors` (batch, m, n),
// blocked and backward like LAPACK orgqr. While block [j0, j1) is applied, the columns < j0 of Q
// are still identity columns, zero in rows >= j0, so only Q[j0:, j0:] changes.
at::Tensor apply_reflectors(const at::Tensor& reflectors) {
  const int64_t n = reflectors.size(2);
  at::Tensor q = at::zeros_like(reflectors);
  q.diagonal(0, -2, -1).fill_(1);
  for (int64_t j0 = (n - 1) / kBlock * kBlock; j0 >= 0; j0 -= kBlock) {
    const int64_t j1 = std::min(j0 + kBlock, n);
    const at::Tensor v = reflectors.slice(1, j0).slice(2, j0, j1);
    const at::Tensor vt = v.transpose(1, 2);
    // Compact WY without larft's sequential loop: H_j0 ... H_{j1-1} = I - V U^{-1} V^T with
    // U = striu(V^T V) + diag(V^T V) / 2 (Puglisi 1992; Schreiber & Van Loan 1989).
    at::Tensor u = at::bmm(vt, v).triu_();
    u.diagonal(0, -2, -1).mul_(0.5);
    at::Tensor trailing = q.slice(1, j0).slice(2, j0);
    const at::Tensor w = at::linalg_solve_triangular(u, at::bmm(vt, trailing), /*upper=*/true);
    trailing.baddbmm_(v, w, /*beta=*/1, /*alpha=*/-1);
  }
  return q;
}

// Fills self, viewed as `batch` matrices of `rows` rows, each as stock orthogonal_ fills one:
// Haar on O(n) when square, uniform on the Stiefel manifold otherwise, times gain. Wide matrices
// are the transposes of tall ones, as in stock.
void fill_orthogonal(at::Tensor& self, int64_t batch, int64_t rows, double gain,
                     const std::optional<at::Generator>& generator) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t cols = self.numel() / (batch * rows);
  const bool wide = rows < cols;
  const int64_t m = wide ? cols : rows;
  const int64_t n = wide ? rows : cols;
  // float16/bfloat16 are computed in float32 and rounded once, by the final copy.
  const at::ScalarType work_dtype = self.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor reflectors = at::empty({batch, m, n}, self.options().dtype(work_dtype));
  fill_standard_normal(reflectors, generator);
  const at::Tensor signs = make_reflectors_in_place(reflectors);
  at::Tensor q = apply_reflectors(reflectors);
  // Column j times sign(R_jj) = -s_j makes Q Haar (Mezzadri); gain folded into the same pass.
  q.mul_(signs.mul(-gain).unsqueeze(1));
  self.copy_((wide ? q.transpose(1, 2) : q).reshape(self.sizes()));
}

void orthogonal(at::Tensor& self, double gain, std::optional<at::Generator> generator) {
  check_orthogonal_args(self, gain, /*batched=*/false);
  if (self.numel() == 0) return;
  fill_orthogonal(self, /*batch=*/1, self.size(0), gain, generator);
}

void orthogonal_batch(at::Tensor& self, double gain, std::optional<at::Generator> generator) {
  check_orthogonal_args(self, gain, /*batched=*/true);
  if (self.numel() == 0) return;
  fill_orthogonal(self, self.size(0), self.size(1), gain, generator);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchinit_ext, CompositeExplicitAutograd, m) {
  m.impl("orthogonal_", &orthogonal);
  m.impl("orthogonal_batch_", &orthogonal_batch);
}

}  // namespace torchinit
