// Every op's schema, declared from the op table (plan/op_table.h), which says what each op does.
// Kernels live per backend (cpu/, cuda/, composite/, and the Meta kernels in meta.cpp).
#include <Python.h>
#include <torch/library.h>

#include "../plan/op_table.h"
#include "python_fast_path.h"

TORCH_LIBRARY(torchinit_ext, m) {
  for (const torchinit::OpSpec& op : torchinit::kOpTable) m.def(op.schema);
}

// `import torchinit_ext._C` loads this library, which registers the ops above; the module holds
// the Python entries of python_fast_path.cpp.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1,
                                      torchinit::fast_path_methods()};
  return PyModule_Create(&module);
}
