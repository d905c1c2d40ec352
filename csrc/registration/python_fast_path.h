// The methods of the torchinit_ext._C module (python_fast_path.cpp).
#pragma once

#include <Python.h>

namespace torchinit {

PyMethodDef* fast_path_methods();

}  // namespace torchinit
