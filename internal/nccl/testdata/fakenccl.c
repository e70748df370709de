// A stand-in for libnccl.so.2 in the package's tests, where no GPU is: its "device" memory
// is host memory and its all-reduce over FAKE_WORLD identical ranks multiplies the buffer by
// FAKE_WORLD. Built with -DPARTIAL it exports ncclGetVersion alone.
#include <stdlib.h>
#include <string.h>

int ncclGetVersion(int *v) { *v = 22703; return 0; }
#ifndef PARTIAL
typedef struct { char internal[128]; } id_t_;
int ncclGetUniqueId(id_t_ *id) { memset(id->internal, 7, 128); return 0; }
int ncclCommInitRank(void **comm, int world, id_t_ id, int rank) {
	if (id.internal[0] != 7) return 4; // ncclInvalidArgument
	*comm = malloc(1);
	return 0;
}
int ncclAllReduce(const void *s, void *r, size_t n, int type, int op, void *comm, void *stream) {
	if (type != 7 || op != 0 || s != r) return 4;
	const char *w = getenv("FAKE_WORLD");
	float k = w ? (float)atoi(w) : 1;
	for (size_t i = 0; i < n; i++) ((float *)r)[i] *= k;
	return 0;
}
int ncclCommDestroy(void *c) { free(c); return 0; }
int ncclCommAbort(void *c) { free(c); return 0; }
int ncclCommGetAsyncError(void *c, int *e) { *e = getenv("FAKE_ASYNC") ? atoi(getenv("FAKE_ASYNC")) : 0; return 0; }
const char *ncclGetErrorString(int r) { return r == 6 ? "remote process exited or there was a network error" : "fake error"; }
#endif
