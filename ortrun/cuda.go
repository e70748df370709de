package ortrun

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// The CUDA execution provider of ONNX Runtime 1.29 is a plug-in beside the core library
// (`make ort-gpu` puts both in .ort/; ort-gpu-env.sh puts them in ~/ort). These are the
// libraries it needs at load time (readelf -d libonnxruntime_providers_cuda.so).
var (
	cudaProviderLibs = []string{"libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"}
	cudaRuntimeLibs  = []string{"libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10"}
	cudaDriverLib    = "libcuda.so.1"
)

func appendCUDA(so *ort.SessionOptions, deviceID int, cudaGraph bool, t Tuning) error {
	co, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return fmt.Errorf("CUDA execution provider: %w%s", err, cudaDiagnosis())
	}
	defer co.Destroy()
	opts := map[string]string{
		"device_id": strconv.Itoa(deviceID),
		// Grow the memory arena by what is asked for, not to the next power of two:
		// a training step's peak is a few large activations, and doubling strategies
		// leave gigabytes reserved but unused (measured on an H200).
		"arena_extend_strategy": "kSameAsRequested",
	}
	if cudaGraph {
		opts["enable_cuda_graph"] = "1"
	}
	// Tuning.CUDAOptions overrides CUDA provider options (for experiments, e.g.
	// gpu_mem_limit or cudnn_conv_algo_search).
	for k, v := range t.CUDAOptions {
		opts[k] = v
	}
	if err := co.Update(opts); err != nil {
		return fmt.Errorf("CUDA execution provider, device %d: %w%s", deviceID, err, cudaDiagnosis())
	}
	if t.ArenaMaxDeadBytes != nil {
		cfg, err := arenaConfig(*t.ArenaMaxDeadBytes)
		if err != nil {
			return fmt.Errorf("CUDA execution provider, device %d: %w", deviceID, err)
		}
		if err := co.SetDefaultMemoryArenaCfg(cfg); err != nil {
			return fmt.Errorf("CUDA execution provider, device %d: arena max_dead_bytes_per_chunk %d: %w", deviceID, *t.ArenaMaxDeadBytes, err)
		}
	}
	if err := so.AppendExecutionProviderCUDA(co); err != nil {
		return fmt.Errorf("CUDA execution provider, device %d, could not start: %w%s", deviceID, err, cudaDiagnosis())
	}
	return nil
}

// cudaDiagnosis says which of the pieces the CUDA execution provider needs are missing, as a
// suffix for an error ("" when it finds nothing missing). It looks where the dynamic loader
// would: the core library's directory for the providers, and $LD_LIBRARY_PATH, the ld.so cache
// and the usual CUDA install directories for CUDA and the driver.
func cudaDiagnosis() string {
	var missing []string
	if lib := LoadedLibrary(); lib != "" {
		dir := filepath.Dir(lib)
		for _, p := range cudaProviderLibs {
			if !fileExists(filepath.Join(dir, p)) {
				missing = append(missing, fmt.Sprintf("%s is not beside %s (run `make ort-gpu`; on the GPU machine source ../shared/device/ort-gpu-env.sh)", p, lib))
			}
		}
	}
	onPath, cached := loaderDirs(), ldCache()
	for _, l := range cudaRuntimeLibs {
		if findIn(onPath, l) != "" || cached[l] {
			continue
		}
		if dir := findIn(cudaInstallDirs(), l); dir != "" {
			missing = append(missing, fmt.Sprintf("%s is in %s but not on the loader path (export LD_LIBRARY_PATH=%s:$LD_LIBRARY_PATH)", l, dir, dir))
		} else {
			missing = append(missing, fmt.Sprintf("%s (CUDA 13 runtime) is not installed or not on LD_LIBRARY_PATH", l))
		}
	}
	if findIn(onPath, cudaDriverLib) == "" && !cached[cudaDriverLib] {
		missing = append(missing, cudaDriverLib+" (the NVIDIA driver) is not installed")
	} else if !fileExists("/proc/driver/nvidia/version") && !fileExists("/dev/nvidia0") {
		missing = append(missing, "no NVIDIA GPU/driver is visible (/proc/driver/nvidia/version and /dev/nvidia0 are absent)")
	}
	if len(missing) == 0 {
		return ""
	}
	return "\n  missing: " + strings.Join(missing, "\n  missing: ")
}

func loaderDirs() []string {
	var dirs []string
	for _, d := range filepath.SplitList(os.Getenv("LD_LIBRARY_PATH")) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	return append(dirs, "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib")
}

func cudaInstallDirs() []string {
	dirs, _ := filepath.Glob("/usr/local/cuda*/targets/x86_64-linux/lib")
	more, _ := filepath.Glob("/usr/local/cuda*/lib64")
	return append(dirs, more...)
}

func findIn(dirs []string, name string) string {
	for _, d := range dirs {
		if fileExists(filepath.Join(d, name)) {
			return d
		}
	}
	return ""
}

// ldCache lists the sonames in the ld.so cache (`ldconfig -p`); empty when ldconfig is absent.
func ldCache() map[string]bool {
	out, err := exec.Command("ldconfig", "-p").Output()
	if err != nil {
		if out, err = exec.Command("/sbin/ldconfig", "-p").Output(); err != nil {
			return nil
		}
	}
	libs := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "lib") {
			libs[f[0]] = true
		}
	}
	return libs
}

// Tuning.ArenaMaxDeadBytes sets the CUDA arena's max_dead_bytes_per_chunk (an experiment,
// like Tuning.CUDAOptions). ONNX Runtime's arena hands out a free chunk whole unless it is at
// least twice the request or the rest is at least this many bytes (default 128 MiB), and
// the rest counts as in use; the training step's activations are many 20–220 MB tensors, so
// the default may hold much of what the bench reports as activations.
var (
	arenaMu   sync.Mutex
	arenaCfgs = map[int]*ort.ArenaCfg{} // kept for the process: sessions keep the pointer
)

// arenaConfig returns the arena configuration with max_dead_bytes_per_chunk n, one per n
// for the process.
func arenaConfig(n int) (*ort.ArenaCfg, error) {
	if n < 0 {
		return nil, fmt.Errorf("arena max_dead_bytes_per_chunk %d: want a number of bytes ≥ 0", n)
	}
	arenaMu.Lock()
	defer arenaMu.Unlock()
	if cfg := arenaCfgs[n]; cfg != nil {
		return cfg, nil
	}
	// kSameAsRequested (1), as appendCUDA's arena_extend_strategy option: an arena
	// configuration replaces the provider's own.
	cfg, err := ort.NewArenaCfgV2(map[string]int{"max_dead_bytes_per_chunk": n, "arena_extend_strategy": 1})
	if err != nil {
		return nil, err
	}
	arenaCfgs[n] = cfg
	return cfg, nil
}
