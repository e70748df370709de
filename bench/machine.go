package bench

import (
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/ortq/ortq/ortrun"
	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"
)

// DescribeMachine collects what a reader of the report needs to reproduce or discount it.
// Every field is best effort: a missing one is left empty, never an error.
func DescribeMachine() Machine {
	var m Machine
	m.Hostname, _ = os.Hostname()
	if hi, err := host.Info(); err == nil {
		m.OS = strings.TrimSpace(hi.Platform + " " + hi.PlatformVersion + " " + hi.KernelVersion)
	} else {
		m.OS = runtime.GOOS
	}
	if ci, err := cpu.Info(); err == nil && len(ci) > 0 {
		m.CPU = strings.TrimSpace(ci[0].ModelName)
	}
	m.Cores, _ = cpu.Counts(false)
	m.Threads, _ = cpu.Counts(true)
	if vm, err := mem.VirtualMemory(); err == nil {
		m.HostMemory = vm.Total
	}
	m.GPUs, m.Driver, m.CUDADriver = gpuInventory()
	if v := ortrun.Version(); v != "" {
		m.Runtime = "ONNX Runtime " + v
		m.RuntimeLib = ortrun.LoadedLibrary()
	}
	m.Go = runtime.Version()
	m.Commit = commit()
	return m
}

// commit is the git revision ortq was built from (Go stamps it into binaries built from a
// checkout), else that of the working directory (go test, go run).
func commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if dirty {
				rev += "+dirty"
			}
			return rev
		}
	}
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		rev += "+dirty"
	}
	return rev
}
