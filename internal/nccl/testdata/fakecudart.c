// A stand-in for libcudart in the package's tests: a stream never finishes while FAKE_HANG
// is set (a peer that hangs).
#include <stdlib.h>
int cudaSetDevice(int d) { return d > 7 ? 101 : 0; } // cudaErrorInvalidDevice
int cudaDeviceSynchronize(void) { return 0; }
int cudaStreamCreateWithFlags(void **s, unsigned f) { *s = malloc(1); return 0; }
int cudaStreamQuery(void *s) { return getenv("FAKE_HANG") ? 600 : 0; }
int cudaStreamDestroy(void *s) { free(s); return 0; }
const char *cudaGetErrorString(int r) { return r == 101 ? "invalid device ordinal" : "fake CUDA error"; }
