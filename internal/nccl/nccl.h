// The few NCCL and CUDA runtime declarations ortq calls, written here so that building ortq
// needs neither NCCL's nor CUDA's headers: both libraries are loaded at run time with
// dlopen. The enum values and the 128-byte unique id are NCCL's ABI (src/nccl.h.in of
// NVIDIA/nccl: ncclSuccess = 0, ncclSum = 0, ncclFloat32 = 7, ncclInProgress = 7,
// NCCL_UNIQUE_ID_BYTES = 128); cudaSuccess = 0 and cudaErrorNotReady = 600 are CUDA's.
#ifndef ORTQ_NCCL_H
#define ORTQ_NCCL_H

#include <stddef.h>

#define ORTQ_NCCL_UNIQUE_ID_BYTES 128
#define ORTQ_NCCL_SUM 0
#define ORTQ_NCCL_FLOAT32 7
#define ORTQ_CUDA_NOT_READY 600

typedef struct { char internal[ORTQ_NCCL_UNIQUE_ID_BYTES]; } ortq_ncclUniqueId;

// ortq_nccl holds the library handles and the functions looked up in them.
typedef struct {
	void *nccl, *cudart;
	int (*getVersion)(int *);
	int (*getUniqueId)(ortq_ncclUniqueId *);
	int (*commInitRank)(void **, int, ortq_ncclUniqueId, int);
	int (*allReduce)(const void *, void *, size_t, int, int, void *, void *);
	int (*commDestroy)(void *);
	int (*commAbort)(void *);
	int (*commGetAsyncError)(void *, int *);
	const char *(*getErrorString)(int);
	int (*setDevice)(int);
	int (*deviceSynchronize)(void);
	int (*streamCreateWithFlags)(void **, unsigned int);
	int (*streamQuery)(void *);
	int (*streamDestroy)(void *);
	const char *(*cudaGetErrorString)(int);
} ortq_nccl;

// ortq_nccl_open fills l from the NCCL library at path and the CUDA runtime (one of cudart
// names, first the one already loaded, e.g. by ONNX Runtime's CUDA provider). It returns
// NULL or a message naming what failed (the dlerror text or the missing symbol), which the
// caller copies.
const char *ortq_nccl_open(ortq_nccl *l, const char *path, const char **cudart, int ncudart);
void ortq_nccl_close(ortq_nccl *l);

#endif
