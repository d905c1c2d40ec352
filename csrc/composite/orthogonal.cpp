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

#include "../plan/checks.h"

namespace torchinit {
namespace {

// Reflectors per compact-WY panel (chosen by measurement: benchmarks/README.md, "Tuning
// constants"): smaller panels starve the GEMMs, larger ones spend more in the Gram matrices (k/n
// of the flops) and the k x k factors.
constexpr int64_t kPanel = 64;

// The project's own normal fill, through the dispatcher so the values obey the RNG contract on
// whichever backend the tensor lives.
void fill_standard_normal(at::Tensor& out, const std::optional<at::Generator>& generator) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("torchinit_ext::normal_", "")
          .typed<void(at::Tensor&, double, double, std::optional<at::Generator>)>();
  op.call(out, 0.0, 1.0, generator);
}

// H_j0 ... H_{j1-1} = I - V T V^T (compact WY), V: (batch, m - j0, k) with zeros above the
// diagonal of its top k x k, T: (batch, k, k) upper triangular.
struct PanelReflectors {
  at::Tensor v;
  at::Tensor t;
};

// Turns columns [j0, j1) of `gaussian` (batch, m, n), in place, into the unnormalized reflectors
// v_j = x_j + d_j e_j, x_j = column j from row j down, d_j = s_j ||x_j|| with s_j = sign(x_j[0])
// (+1 at 0; no cancellation), d_j = 1 (v_j = e_j) where x_j = 0. Rows < j0 are never read.
PanelReflectors panel_reflectors(at::Tensor& gaussian, int64_t j0, int64_t j1) {
  const int64_t k = j1 - j0;
  at::Tensor v = gaussian.slice(1, j0).slice(2, j0, j1);
  at::Tensor top = v.narrow(1, 0, k).tril_();
  const at::Tensor vt = v.transpose(1, 2);
  // X^T X: its diagonal gives the norms, so no separate (strided, slow) norm pass. Adding
  // E = [diag(d); 0] to X turns it into V^T V = X^T X + X^T E + E^T X + E^T E, whose upper
  // triangle (all U needs) is X^T X + top^T diag(d) plus d_j (x_j[0] + d_j) on the diagonal.
  at::Tensor gram = at::bmm(vt, v);
  at::Tensor heads = top.diagonal(0, -2, -1);
  const at::Tensor norms = gram.diagonal(0, -2, -1).sqrt();
  const at::Tensor shifts = at::where(heads < 0, -norms, norms).masked_fill_(norms == 0, 1.0);
  gram.add_(top.transpose(1, 2) * shifts.unsqueeze(1));
  gram.diagonal(0, -2, -1).add_(shifts * (heads + shifts));
  heads.add_(shifts);
  // Compact WY without larft's sequential loop: T = U^{-1} with U = striu(V^T V) + diag(V^T V)/2
  // (Puglisi 1992; Schreiber & Van Loan 1989). Explicit T turns the application's triangular
  // solve into a GEMM.
  at::Tensor u = gram.triu_();
  u.diagonal(0, -2, -1).mul_(0.5);
  const at::Tensor identity = at::eye(k, u.options()).expand_as(u);
  return {v, at::linalg_solve_triangular(u, identity, /*upper=*/true)};
}

// Q = H_0 H_1 ... H_{n-1} [D; 0], D = diag(-s_j * gain): the reflectors of the Gaussian
// columns, times sign(R_jj) = -s_j (Mezzadri's fix, which makes Q Haar) and gain, both folded
// into the starting matrix. Blocked and backward like LAPACK orgqr: while panel [j0, j1) is
// applied, the columns < j0 of Q are still columns of [D; 0], zero in rows >= j0, so only
// Q[j0:, j0:] changes.
at::Tensor haar_from_gaussian(at::Tensor& gaussian, double gain) {
  const int64_t n = gaussian.size(2);
  at::Tensor q = at::zeros_like(gaussian);
  q.diagonal(0, -2, -1).fill_(-gain).masked_fill_(gaussian.diagonal(0, -2, -1) < 0, gain);
  for (int64_t j0 = (n - 1) / kPanel * kPanel; j0 >= 0; j0 -= kPanel) {
    const PanelReflectors panel = panel_reflectors(gaussian, j0, std::min(j0 + kPanel, n));
    at::Tensor trailing = q.slice(1, j0).slice(2, j0);
    const at::Tensor w = at::bmm(panel.t, at::bmm(panel.v.transpose(1, 2), trailing));
    trailing.baddbmm_(panel.v, w, /*beta=*/1, /*alpha=*/-1);
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
  at::Tensor gaussian = at::empty({batch, m, n}, self.options().dtype(work_dtype));
  fill_standard_normal(gaussian, generator);
  const at::Tensor q = haar_from_gaussian(gaussian, gain);
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
