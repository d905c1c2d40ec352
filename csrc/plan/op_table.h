// Every op of the library, once: its schema, what kind of op it is, and for an elementwise law
// the law's name and its fill from fill_many_'s parameters. The registrations derive from it
// (ops.cpp declares the schemas, autograd.cpp puts the layers above the kernels on every op that
// writes), fill_many_ finds its laws in it (named_fill), and _C.op_table() gives it to the Python
// layer, which derives its routing and the recorder's tables from it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <string>

#include "elementwise_fill.h"

namespace torchinit {

enum class OpKind {
  kLaw,     // an elementwise fill of one law, which fill_many_ also takes by the law's name
  kWhole,   // a fill that is not elementwise: replayed whole, a DTensor's built in full
  kBatch,   // fill_many_: elementwise fills of many tensors in one parallel region
  kHelper,  // writes no tensor
};

struct OpSpec {
  const char* schema;
  OpKind kind;
  // kLaw: the law's name, and its fill from params[0..4), the op's arguments after self (and
  // before the generator) in order: fill_many_ passes params[4t : 4t+4], so at most four.
  const char* law = nullptr;
  ElementwiseFill (*make_fill)(const at::Tensor& self, c10::ArrayRef<double> params) = nullptr;
};

// Each op mutates `self` in place and returns nothing (the Python layer returns the tensor, as
// torch.nn.init does): torch.compile's functionalization supports mutated inputs but not
// aliased outputs. The schemas are the library's interface, versioned with the package: a change
// to one (an argument renamed, added or removed) bumps torchinit_ext.__version__ and has an entry
// in docs/rng-contract.md's Changes, as for values.
inline constexpr OpSpec kOpTable[] = {
    {"constant_(Tensor(a!) self, Scalar value) -> ()", OpKind::kLaw, "constant",
     [](const at::Tensor& self, c10::ArrayRef<double> p) { return constant_fill(self, p[0]); }},
    {"uniform_(Tensor(a!) self, float a, float b, Generator? generator=None) -> ()", OpKind::kLaw,
     "uniform",
     [](const at::Tensor& self, c10::ArrayRef<double> p) {
       return uniform_fill(self, p[0], p[1]);
     }},
    {"normal_(Tensor(a!) self, float mean, float std, Generator? generator=None) -> ()",
     OpKind::kLaw, "normal",
     [](const at::Tensor& self, c10::ArrayRef<double> p) { return normal_fill(self, p[0], p[1]); }},
    {"trunc_normal_(Tensor(a!) self, float mean, float std, float a, float b, "
     "Generator? generator=None) -> ()",
     OpKind::kLaw, "trunc_normal",
     [](const at::Tensor& self, c10::ArrayRef<double> p) {
       return trunc_normal_fill(self, p[0], p[1], p[2], p[3]);
     }},
    {"sparse_(Tensor(a!) self, float sparsity, float std, Generator? generator=None) -> ()",
     OpKind::kWhole},
    {"eye_(Tensor(a!) self) -> ()", OpKind::kWhole},
    {"dirac_(Tensor(a!) self, int groups=1) -> ()", OpKind::kWhole},
    // Each (size(0), rest) matrix of self, or with _batch each self[b], as stock orthogonal_.
    {"orthogonal_(Tensor(a!) self, float gain, Generator? generator=None) -> ()", OpKind::kWhole},
    {"orthogonal_batch_(Tensor(a!) self, float gain, Generator? generator=None) -> ()",
     OpKind::kWhole},
    // Tensor t gets the law laws[t] (a kLaw row's) with params[4t : 4t+4], from Philox state
    // (states[2t], states[2t+1]). With full_sizes and shard_starts (dim() entries per tensor,
    // concatenated), tensor t is the shard of a larger tensor starting there and gets that shard
    // of the larger tensor's values.
    {"fill_many_(Tensor(a!)[] selves, str[] laws, float[] params, int[] states, "
     "int[] full_sizes=[], int[] shard_starts=[]) -> ()",
     OpKind::kBatch},
    // The (key, offset) a random fill of self would draw from `generator` now (advancing it as
    // that fill would), as signed 64-bit integers.
    {"philox_state(Tensor self, Generator? generator=None) -> int[]", OpKind::kHelper},
    // The raw Philox4x32-10 stream of the RNG contract: Philox blocks [0, num_blocks) as int32
    // words.
    {"philox_blocks(int key, int offset, int num_blocks) -> Tensor", OpKind::kHelper},
    // The SIMD level of the CPU kernels (csrc/cpu_runtime/simd.h): the one in use, those this CPU
    // has (best first), and a new one (None: the automatic choice, TORCHINIT_CPU_CAPABILITY
    // included).
    {"cpu_capability() -> str", OpKind::kHelper},
    {"supported_cpu_capabilities() -> str[]", OpKind::kHelper},
    {"set_cpu_capability(str? level) -> ()", OpKind::kHelper},
};

// The op's name: its schema up to the argument list.
inline std::string op_name(const OpSpec& op) {
  const std::string schema = op.schema;
  return schema.substr(0, schema.find('('));
}

// The fill fill_many_ asks of a target: a kLaw row's law by name, with params[0..4).
inline ElementwiseFill named_fill(const at::Tensor& self, c10::string_view law,
                                  c10::ArrayRef<double> params) {
  for (const OpSpec& op : kOpTable) {
    if (op.kind == OpKind::kLaw && law == op.law) return op.make_fill(self, params);
  }
  std::string expected;  // "constant, uniform, normal or trunc_normal"
  const char* last = nullptr;
  for (const OpSpec& op : kOpTable) {
    if (op.kind != OpKind::kLaw) continue;
    if (last) expected += (expected.empty() ? "" : ", ") + std::string(last);
    last = op.law;
  }
  expected += (expected.empty() ? "" : " or ") + std::string(last);
  TORCH_CHECK_VALUE(false, "fill_many_: unknown law '", law, "' (expected ", expected, ")");
}

}  // namespace torchinit
