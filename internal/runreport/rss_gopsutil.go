package runreport

import (
	"os"

	"github.com/shirou/gopsutil/v4/process"
)

// Host memory is read through gopsutil (portable beyond Linux). gopsutil leaves its HWM
// field 0 (measured), so the kernel's high-water mark still comes from /proc where there
// is one: sampling alone misses short peaks.
func init() {
	DefaultRSSSampler = func() (uint64, uint64, error) {
		p, err := process.NewProcess(int32(os.Getpid()))
		if err != nil {
			return 0, 0, err
		}
		mi, err := p.MemoryInfo()
		if err != nil {
			return 0, 0, err
		}
		hwm := mi.HWM
		if _, h, err := procStatusSampler(); err == nil && h > hwm {
			hwm = h
		}
		return mi.RSS, hwm, nil
	}
}
