package bench

import (
	"os"
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

// commit is the git revision the running binary was built from, as Go stamps it into a
// binary built inside a checkout (vcs.revision, "+dirty" when vcs.modified): the build's own,
// never that of whatever repository the current directory is in. Empty when the build has no
// VCS stamp (go test, go run, -buildvcs=false, a build outside a checkout).
func commit() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	return commitOf(bi)
}

// commitOf reads the revision from a binary's build info.
func commitOf(bi *debug.BuildInfo) string {
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "+dirty"
	}
	return rev
}
