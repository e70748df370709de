// Package gpumem reads NVIDIA GPU memory through NVML (go-nvml, which dlopens
// libnvidia-ml.so.1 at Init): the devices and driver versions, and one device's used
// memory, this process's share where the driver reports it. `ortq bench` samples it for
// its peak-memory figures and `ortq train` for its memory log; it lives apart from both
// so that neither links the other. On a machine without an NVIDIA driver NVML does not
// load and every function reports "no GPU" (nil, no error where that is not a failure).
package gpumem
