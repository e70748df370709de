#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "nccl.h"

static char ortq_nccl_err[512];

static const char *ortq_nccl_fail(const char *what, const char *name) {
	const char *e = dlerror();
	snprintf(ortq_nccl_err, sizeof ortq_nccl_err, "%s %s: %s", what, name, e ? e : "not found");
	return ortq_nccl_err;
}

#define SYM(handle, field, name)                         \
	do {                                                 \
		*(void **)(&l->field) = dlsym(l->handle, name);  \
		if (!l->field)                                   \
			return ortq_nccl_fail("missing symbol", name); \
	} while (0)

const char *ortq_nccl_open(ortq_nccl *l, const char *path, const char **cudart, int ncudart) {
	memset(l, 0, sizeof *l);
	l->nccl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!l->nccl)
		return ortq_nccl_fail("dlopen", path);
	SYM(nccl, getVersion, "ncclGetVersion");
	SYM(nccl, getUniqueId, "ncclGetUniqueId");
	SYM(nccl, commInitRank, "ncclCommInitRank");
	SYM(nccl, allReduce, "ncclAllReduce");
	SYM(nccl, commDestroy, "ncclCommDestroy");
	SYM(nccl, commAbort, "ncclCommAbort");
	SYM(nccl, commGetAsyncError, "ncclCommGetAsyncError");
	SYM(nccl, getErrorString, "ncclGetErrorString");
	for (int pass = 0; pass < 2 && !l->cudart; pass++)
		for (int i = 0; i < ncudart && !l->cudart; i++)
			l->cudart = dlopen(cudart[i], RTLD_NOW | RTLD_LOCAL | (pass == 0 ? RTLD_NOLOAD : 0));
	if (!l->cudart)
		return ortq_nccl_fail("dlopen", cudart[0]);
	SYM(cudart, setDevice, "cudaSetDevice");
	SYM(cudart, deviceSynchronize, "cudaDeviceSynchronize");
	SYM(cudart, streamCreateWithFlags, "cudaStreamCreateWithFlags");
	SYM(cudart, streamQuery, "cudaStreamQuery");
	SYM(cudart, streamDestroy, "cudaStreamDestroy");
	SYM(cudart, cudaGetErrorString, "cudaGetErrorString");
	return NULL;
}

void ortq_nccl_close(ortq_nccl *l) {
	if (l->cudart)
		dlclose(l->cudart);
	if (l->nccl)
		dlclose(l->nccl);
	memset(l, 0, sizeof *l);
}
