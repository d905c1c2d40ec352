// Every op's schema, declared once. Kernels live per backend (cpu/, cuda/, meta.cpp); each op
// mutates `self` in place and returns it, as torch.nn.init does.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(torchinit_ext, m) {
  m.def("uniform_(Tensor(a!) self, float a, float b, Generator? generator=None) -> Tensor(a!)");
  m.def("normal_(Tensor(a!) self, float mean, float std, Generator? generator=None) -> Tensor(a!)");
  m.def("constant_(Tensor(a!) self, Scalar value) -> Tensor(a!)");
  m.def("eye_(Tensor(a!) self) -> Tensor(a!)");
  m.def("dirac_(Tensor(a!) self, int groups=1) -> Tensor(a!)");
  // The raw Philox4x32-10 stream of the RNG contract: blocks [0, num_blocks) as int32 words.
  m.def("philox_blocks(int key, int offset, int num_blocks) -> Tensor");
}

// `import torchinit_ext._C` loads this library, which registers the ops above; the module itself
// is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
