// Every op's schema, declared once. Kernels live per backend (cpu/, cuda/, composite/, and the
// Meta kernels in meta.cpp). Each op mutates `self` in place and returns nothing (the Python
// layer returns the tensor, as torch.nn.init does): torch.compile's functionalization supports
// mutated inputs but not aliased outputs.
#include <Python.h>
#include <torch/library.h>

#include "python_fast_path.h"

TORCH_LIBRARY(torchinit_ext, m) {
  m.def("uniform_(Tensor(a!) self, float a, float b, Generator? generator=None) -> ()");
  m.def("normal_(Tensor(a!) self, float mean, float std, Generator? generator=None) -> ()");
  m.def(
      "trunc_normal_(Tensor(a!) self, float mean, float std, float a, float b, "
      "Generator? generator=None) -> ()");
  m.def("sparse_(Tensor(a!) self, float sparsity, float std, Generator? generator=None) -> ()");
  m.def("constant_(Tensor(a!) self, Scalar value) -> ()");
  m.def("eye_(Tensor(a!) self) -> ()");
  m.def("dirac_(Tensor(a!) self, int groups=1) -> ()");
  // Each (size(0), rest) matrix of self, or with _batch each self[b], as stock orthogonal_.
  m.def("orthogonal_(Tensor(a!) self, float gain, Generator? generator=None) -> ()");
  m.def("orthogonal_batch_(Tensor(a!) self, float gain, Generator? generator=None) -> ()");
  // Elementwise fills of many tensors in one parallel region (whole-model and sharded init).
  // Tensor t gets laws[t] ("constant", "uniform", "normal" or "trunc_normal") with
  // params[4t : 4t+4] in the single op's argument order, from Philox key (keys[2t], keys[2t+1]).
  // With full_sizes and block_starts (dim() entries per tensor, concatenated), tensor t is the
  // block of a larger tensor starting there and gets that block of the larger tensor's values.
  m.def(
      "fill_many_(Tensor(a!)[] selves, str[] laws, float[] params, int[] keys, "
      "int[] full_sizes=[], int[] block_starts=[]) -> ()");
  // The (key, offset) a random fill of self would draw from `generator` now (advancing it as
  // that fill would), as signed 64-bit integers.
  m.def("philox_key(Tensor self, Generator? generator=None) -> int[]");
  // The raw Philox4x32-10 stream of the RNG contract: blocks [0, num_blocks) as int32 words.
  m.def("philox_blocks(int key, int offset, int num_blocks) -> Tensor");
  // The SIMD level of the CPU kernels (csrc/cpu_runtime/simd.h): the one in use, those this CPU has
  // (best first), and a new one (None: the automatic choice, TORCHINIT_CPU_CAPABILITY included).
  m.def("cpu_capability() -> str");
  m.def("supported_cpu_capabilities() -> str[]");
  m.def("set_cpu_capability(str? level) -> ()");
}

// `import torchinit_ext._C` loads this library, which registers the ops above; the module holds
// the lean Python entries of python_fast_path.cpp.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1,
                                      torchinit::fast_path_methods()};
  return PyModule_Create(&module);
}
