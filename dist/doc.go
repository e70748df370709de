// Package dist starts and watches the processes of a data-parallel run: one process per
// GPU, on one host or several, in torchrun's model.
//
// Config is a process's place in the run (rank, world size, the address of rank 0's
// rendezvous), from flags or torchrun's environment variables (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Join is the rendezvous: rank 0 listens on the
// master address, the others connect over TCP, rank 0 hands every rank a payload (the NCCL
// unique id) once all have joined, and the connections stay open for heartbeats, so that a
// rank that exits or stops answering ends every other rank's Group.Context within the
// timeout with an error naming it; Group.Agree compares a checksum across the ranks. Launch
// is the one-host launcher: it starts one child process per GPU with that environment,
// forwards SIGINT, SIGTERM and SIGHUP, and when a child fails stops the others within the timeout
// and returns a one-line error naming the rank.
//
// The package moves only the rendezvous' few bytes; the gradients go through NCCL.
package dist
