// The methods of the torchinit_ext._C module that switch deferred_init()'s fast path on and off
// (recording.cpp).
#pragma once

#include <Python.h>

namespace torchinit {

PyMethodDef* recording_methods();

}  // namespace torchinit
