package gpumem

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/ortq/ortq/internal/devname"
)

var (
	nvmlOnce sync.Once
	nvmlErr  error
)

// initNVML loads NVML once per process.
func initNVML() error {
	nvmlOnce.Do(func() {
		defer func() {
			// go-nvml panics on some broken installs (symbol lookup); treat as absent.
			if r := recover(); r != nil {
				nvmlErr = fmt.Errorf("NVML: %v", r)
			}
		}()
		if ret := nvml.Init(); ret != nvml.SUCCESS {
			nvmlErr = fmt.Errorf("NVML: %s", nvml.ErrorString(ret))
		}
		// Never Shutdown: the library stays loaded for the process's life, and a later
		// Init in the same process would otherwise pay the load again.
	})
	return nvmlErr
}

// Info describes one device NVML sees.
type Info struct {
	Index  int
	Name   string
	UUID   string
	Memory uint64 // bytes
}

// Inventory lists the devices NVML sees and the driver and CUDA driver versions; all
// empty when NVML is unavailable.
func Inventory() (gpus []Info, driver, cuda string) {
	if initNVML() != nil {
		return nil, "", ""
	}
	if v, ret := nvml.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		driver = v
	}
	if v, ret := nvml.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS {
		cuda = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, driver, cuda
	}
	for i := 0; i < n; i++ {
		d, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		g := Info{Index: i}
		g.Name, _ = d.GetName()
		g.UUID, _ = d.GetUUID()
		if mi, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.Memory = mi.Total
		}
		gpus = append(gpus, g)
	}
	return gpus, driver, cuda
}

// Device is the NVML device behind one ortrun device string.
type Device struct {
	dev  nvml.Device
	pid  uint32
	name string
}

// Open returns the NVML device behind an ortrun device string ("cuda", "cuda:N"), or nil
// (and the reason) when the device is the CPU (nil, nil) or NVML is unavailable.
func Open(device string) (*Device, error) {
	provider, id, err := devname.Parse(device)
	if err != nil {
		return nil, err
	}
	if provider != "cuda" {
		return nil, nil
	}
	if err := initNVML(); err != nil {
		return nil, err
	}
	// CUDA numbers the devices CUDA_VISIBLE_DEVICES lets it see; NVML numbers them all.
	var d nvml.Device
	var ret nvml.Return
	sel := visibleDevice(os.Getenv("CUDA_VISIBLE_DEVICES"), id)
	switch {
	case strings.HasPrefix(sel, "GPU-") || strings.HasPrefix(sel, "MIG-"):
		d, ret = nvml.DeviceGetHandleByUUID(sel)
	default:
		idx, convErr := strconv.Atoi(sel)
		if convErr != nil {
			return nil, fmt.Errorf("CUDA_VISIBLE_DEVICES entry %q: not an index or UUID", sel)
		}
		d, ret = nvml.DeviceGetHandleByIndex(idx)
	}
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML device for %s: %s", device, nvml.ErrorString(ret))
	}
	name, _ := d.GetName()
	return &Device{dev: d, pid: uint32(os.Getpid()), name: name}, nil
}

// Name is the device's product name.
func (g *Device) Name() string { return g.name }

// Sample returns this process's used memory (procOK=false when the driver does not report
// it for our PID, e.g. in a container with its own PID namespace) and the device's used
// and total memory.
func (g *Device) Sample() (proc uint64, procOK bool, used, total uint64, err error) {
	mi, ret := g.dev.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return 0, false, 0, 0, fmt.Errorf("NVML memory info: %s", nvml.ErrorString(ret))
	}
	if ps, ret := g.dev.GetComputeRunningProcesses(); ret == nvml.SUCCESS {
		for _, p := range ps {
			// NVML_VALUE_NOT_AVAILABLE (all ones) is what drivers report without the
			// permission to see per-process use.
			if p.Pid == g.pid && p.UsedGpuMemory != ^uint64(0) {
				proc += p.UsedGpuMemory
				procOK = true
			}
		}
	}
	return proc, procOK, mi.Used, mi.Total, nil
}

// Sampler returns a function reporting this process's GPU memory (or the device's used
// memory where the driver hides per-process figures) and the device total, for an ortrun
// device string; nil when the device is the CPU or NVML is unavailable. `ortq train` uses
// it for its memory log.
func Sampler(device string) func() (used, total uint64, ok bool) {
	d, err := Open(device)
	if err != nil || d == nil {
		return nil
	}
	return func() (uint64, uint64, bool) {
		proc, procOK, devUsed, total, err := d.Sample()
		if err != nil {
			return 0, 0, false
		}
		if procOK {
			return proc, total, true
		}
		return devUsed, total, true
	}
}

// Free is a CUDA device's free memory now: 0 and no error for the CPU or where NVML is
// unavailable (nothing to compare with).
func Free(device string) (uint64, error) {
	d, err := Open(device)
	if err != nil || d == nil {
		return 0, err
	}
	_, _, used, total, err := d.Sample()
	if err != nil || used > total {
		return 0, err
	}
	return total - used, nil
}

// visibleDevice maps CUDA device id to the CUDA_VISIBLE_DEVICES entry naming it.
func visibleDevice(env string, id int) string {
	if strings.TrimSpace(env) == "" {
		return strconv.Itoa(id)
	}
	parts := strings.Split(env, ",")
	if id < len(parts) {
		return strings.TrimSpace(parts[id])
	}
	return strconv.Itoa(id)
}

// Visible is the number of GPUs CUDA numbers: NVML's count, cut to the entries of
// CUDA_VISIBLE_DEVICES when it is set (CUDA stops at the first empty entry). 0 when NVML is
// unavailable.
func Visible() int {
	gpus, _, _ := Inventory()
	n := len(gpus)
	if env, ok := os.LookupEnv("CUDA_VISIBLE_DEVICES"); ok {
		k := 0
		for _, e := range strings.Split(env, ",") {
			if strings.TrimSpace(e) == "" {
				break
			}
			k++
		}
		n = min(n, k)
	}
	return n
}
