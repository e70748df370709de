package bench

import "github.com/ortq/ortq/internal/gpumem"

// gpuInventory lists the devices NVML sees and the driver versions (none without NVML).
func gpuInventory() (gpus []GPU, driver, cuda string) {
	infos, driver, cuda := gpumem.Inventory()
	for _, g := range infos {
		gpus = append(gpus, GPU{Index: g.Index, Name: g.Name, UUID: g.UUID, Memory: g.Memory})
	}
	return gpus, driver, cuda
}

// gpuProbe reads one device's memory use; the monitor takes it as an interface so that
// its tests run against a fake device.
type gpuProbe interface {
	// sample returns this process's used memory (ok=false when the driver does not
	// report it for our PID) and the device's used and total memory.
	sample() (proc uint64, procOK bool, used, total uint64, err error)
	name() string
}

type nvmlGPU struct{ d *gpumem.Device }

func (g nvmlGPU) name() string { return g.d.Name() }
func (g nvmlGPU) sample() (uint64, bool, uint64, uint64, error) {
	return g.d.Sample()
}

// openGPU returns the NVML device behind an ortrun device string ("cuda", "cuda:N"), or
// nil (and the reason) when the device is the CPU or NVML is unavailable.
func openGPU(device string) (gpuProbe, error) {
	d, err := gpumem.Open(device)
	if err != nil || d == nil {
		return nil, err
	}
	return nvmlGPU{d}, nil
}
