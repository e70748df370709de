#include "lora_wrapper.h"

typedef const OrtApiBase *(*LoraGetApiBaseFunction)(void);

static const OrtApi *lora_api = NULL;

int LoraSetAPI(void *get_api_base_fn) {
  const OrtApiBase *base;
  if (!get_api_base_fn) return 1;
  base = ((LoraGetApiBaseFunction) get_api_base_fn)();
  if (!base) return 2;
  lora_api = base->GetApi(ORT_API_VERSION);
  return lora_api ? 0 : 3;
}

OrtStatus *LoraCreateAdapter(const char *path, OrtAllocator *allocator,
  OrtLoraAdapter **out) {
  return lora_api->CreateLoraAdapter(path, allocator, out);
}

OrtStatus *LoraCreateAdapterFromArray(const void *bytes, size_t num_bytes,
  OrtAllocator *allocator, OrtLoraAdapter **out) {
  return lora_api->CreateLoraAdapterFromArray(bytes, num_bytes, allocator, out);
}

void LoraReleaseAdapter(OrtLoraAdapter *adapter) {
  lora_api->ReleaseLoraAdapter(adapter);
}

OrtStatus *LoraRunOptionsAddActiveAdapter(OrtRunOptions *options,
  const OrtLoraAdapter *adapter) {
  return lora_api->RunOptionsAddActiveLoraAdapter(options, adapter);
}
