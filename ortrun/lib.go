package ortrun

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

const (
	// ORTVersion is the ONNX Runtime release ortq is built and tested against (`make ort`).
	ORTVersion = "1.29.0"
	// LibName is the file name of the ONNX Runtime core library.
	LibName = "libonnxruntime.so.1"
	// EnvLib names the environment variable holding the library path.
	EnvLib = "ORTQ_ORT_LIB"
	// EnvRequire, when set (and not "0"), makes tests fail instead of skip without a library.
	EnvRequire = "ORTQ_REQUIRE_ORT"
)

// ErrLibraryNotFound is wrapped by FindLibrary's error when no library was found.
var ErrLibraryNotFound = errors.New("ONNX Runtime library not found")

// FindLibrary returns the path of libonnxruntime.so.1, looking in order at: explicit (a flag
// or config value), $ORTQ_ORT_LIB, .ort/libonnxruntime.so.1 in the working directory or any
// directory above it (the repository when run from inside it), the same beside the executable
// and above it (bin/ortq → <repo>/.ort), and ~/ort/libonnxruntime.so.1 (a per-user install,
// as on a GPU machine where the CUDA bundle of `make ort-gpu-bundle` is unpacked into ~/ort).
// An explicit or environment path that does not exist is an error, not a reason to look
// further.
func FindLibrary(explicit string) (string, error) {
	if explicit != "" {
		return checkLib(explicit, "the given path")
	}
	if p := os.Getenv(EnvLib); p != "" {
		return checkLib(p, "$"+EnvLib)
	}
	var tried []string
	seen := map[string]bool{}
	try := func(dir string) string {
		p := filepath.Join(dir, ".ort", LibName)
		if seen[p] {
			return ""
		}
		seen[p] = true
		tried = append(tried, p)
		if isFile(p) {
			return p
		}
		return ""
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			starts = append(starts, filepath.Dir(exe))
		}
	}
	for _, dir := range starts {
		for {
			if p := try(dir); p != "" {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, "ort", LibName)
		tried = append(tried, p)
		if isFile(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s (ONNX Runtime %s) is not in any of %s; run `make ort` in the ortq "+
		"repository (it fetches onnxruntime-node@%s with npm into .ort/), or set $%s or --ort-lib to its path",
		ErrLibraryNotFound, LibName, ORTVersion, strings.Join(tried, ", "), ORTVersion, EnvLib)
}

func checkLib(p, from string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("ONNX Runtime library %q (from %s): %w", p, from, err)
	}
	st, err := os.Stat(abs)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: %q (from %s) does not exist; run `make ort` to fetch %s into .ort/, or point %s at it",
			ErrLibraryNotFound, abs, from, LibName, from)
	case st.IsDir():
		return "", fmt.Errorf("ONNX Runtime library %q (from %s) is a directory; name the file %s inside it", abs, from, LibName)
	}
	return abs, nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

var (
	initMu  sync.Mutex
	initLib string // the library the process-wide environment was created from
)

// Init loads ONNX Runtime from libPath (FindLibrary("") when empty) and creates the
// process-wide onnxruntime_go environment. Later calls are no-ops that return nil when they
// name the same library (or none) and an error when they name another one, since one process
// can hold only one environment.
func Init(libPath string) error {
	initMu.Lock()
	defer initMu.Unlock()
	if libPath == "" && initLib != "" {
		return nil
	}
	var err error
	if libPath == "" {
		libPath, err = FindLibrary("")
	} else {
		libPath, err = checkLib(libPath, "the given path")
	}
	if err != nil {
		return err
	}
	if ort.IsInitialized() {
		if initLib != "" && !sameFile(initLib, libPath) {
			return fmt.Errorf("ONNX Runtime is already loaded from %q; cannot also load %q in one process", initLib, libPath)
		}
		return nil
	}
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(); err != nil {
		return fmt.Errorf("loading ONNX Runtime from %q: %w (it must be the %s core; `make ort` fetches it)", libPath, err, ORTVersion)
	}
	initLib = libPath
	return nil
}

func sameFile(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return os.SameFile(sa, sb)
}

// LoadedLibrary is the path Init loaded ONNX Runtime from ("" before Init).
func LoadedLibrary() string {
	initMu.Lock()
	defer initMu.Unlock()
	return initLib
}

// Version is the loaded ONNX Runtime's version string ("" before Init).
func Version() string {
	if !ort.IsInitialized() {
		return ""
	}
	return ort.GetVersion()
}

// Required reports whether $ORTQ_REQUIRE_ORT is set (and not "0" or "false"): tests that
// need ONNX Runtime then fail instead of skipping without it (ortruntest.Lib), as
// `make test` and CI ask, so that nothing silently skips there.
func Required() bool {
	v := os.Getenv(EnvRequire)
	return v != "" && v != "0" && !strings.EqualFold(v, "false")
}
