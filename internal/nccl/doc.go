// Package nccl calls NVIDIA's NCCL from Go for data parallelism over GPUs and hosts: a
// communicator per process (GetUniqueID on rank 0, the id handed to the other ranks by the
// caller, InitRank on every rank) and an in-place float32 sum all-reduce of a buffer in
// device memory (Comm.AllReduceSum).
//
// NCCL and the CUDA runtime are loaded at run time with dlopen, as ONNX Runtime is
// (FindLibrary: a path given by --nccl-lib or $ORTQ_NCCL_LIB, else a search of the usual
// places), so that ortq builds without CUDA or NCCL headers and runs without NCCL wherever
// no all-reduce is asked for. The few types and enum values used are declared in nccl.h
// from NCCL's ABI.
//
// CUDA's current device is per OS thread and Go moves goroutines between threads, so every
// call into C sets the communicator's device first, in the same C call.
package nccl
