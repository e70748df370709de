#ifndef ORTQ_LORA_WRAPPER_H
#define ORTQ_LORA_WRAPPER_H

// Added in the ortq fork (see README.md): ONNX Runtime's LoRA adapter API. It
// keeps its own OrtApi pointer, taken from the library onnxruntime_wrapper.c
// loaded, so that file stays as it is.

#include "onnxruntime_c_api.h"

// Takes the OrtApi from the library's OrtGetApiBase function (fn); returns 0 on
// success.
int LoraSetAPI(void *get_api_base_fn);

// Wraps ort_api->CreateLoraAdapter (allocator may be NULL: the parameters stay
// in CPU memory and are copied to the device on each run).
OrtStatus *LoraCreateAdapter(const char *path, OrtAllocator *allocator,
  OrtLoraAdapter **out);

// Wraps ort_api->CreateLoraAdapterFromArray (the bytes are copied).
OrtStatus *LoraCreateAdapterFromArray(const void *bytes, size_t num_bytes,
  OrtAllocator *allocator, OrtLoraAdapter **out);

// Wraps ort_api->ReleaseLoraAdapter.
void LoraReleaseAdapter(OrtLoraAdapter *adapter);

// Wraps ort_api->RunOptionsAddActiveLoraAdapter.
OrtStatus *LoraRunOptionsAddActiveAdapter(OrtRunOptions *options,
  const OrtLoraAdapter *adapter);

#endif  // ORTQ_LORA_WRAPPER_H
