package nccl

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "nccl.h"

static int ortq_version(ortq_nccl *l, int *v) { return l->getVersion(v); }
static int ortq_unique_id(ortq_nccl *l, ortq_ncclUniqueId *id) { return l->getUniqueId(id); }
static const char *ortq_nccl_error(ortq_nccl *l, int r) { return l->getErrorString(r); }
static const char *ortq_cuda_error(ortq_nccl *l, int r) { return l->cudaGetErrorString(r); }
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"
)

const (
	// LibName is NCCL's shared library.
	LibName = "libnccl.so.2"
	// EnvLib names the environment variable holding its path (the --nccl-lib flag's).
	EnvLib = "ORTQ_NCCL_LIB"
	// UniqueIDBytes is the size of ncclUniqueId (NCCL_UNIQUE_ID_BYTES).
	UniqueIDBytes = C.ORTQ_NCCL_UNIQUE_ID_BYTES
)

// ErrLibraryNotFound is wrapped by FindLibrary's error when no libnccl.so.2 was found.
var ErrLibraryNotFound = errors.New("NCCL library not found")

// CUDARuntimes are the CUDA runtime's sonames Open tries, newest first; one already loaded
// (by ONNX Runtime's CUDA provider) is preferred, so that NCCL and ONNX Runtime share one
// runtime. Tests elsewhere set a stand-in's path.
var CUDARuntimes = []string{"libcudart.so.13", "libcudart.so.12", "libcudart.so"}

// UniqueID is ncclUniqueId: rank 0 makes it, every rank needs it to join the communicator.
type UniqueID [UniqueIDBytes]byte

// Lib is a loaded NCCL and CUDA runtime.
type Lib struct {
	c       *C.ortq_nccl
	Path    string
	Version int // ncclGetVersion's code, e.g. 22703 for 2.27.3
}

// FindLibrary returns the path of libnccl.so.2: explicit (the flag) or $ORTQ_NCCL_LIB when
// set (one that does not exist is an error), else the first that exists of
// $LD_LIBRARY_PATH's directories, the nvidia/nccl/lib directory of the pip wheel
// nvidia-nccl-cu12/-cu13 (as PyTorch installs it) under $VIRTUAL_ENV, $CONDA_PREFIX,
// ~/.local and the system's Python, and the system's library directories.
func FindLibrary(explicit string) (string, error) {
	from := "--nccl-lib"
	if explicit != "" && explicit == os.Getenv(EnvLib) {
		from = "$" + EnvLib // the flag's variable, as viper passes it on
	}
	for _, c := range []struct{ p, from string }{{explicit, from}, {os.Getenv(EnvLib), "$" + EnvLib}} {
		if c.p == "" {
			continue
		}
		if st, err := os.Stat(c.p); err != nil || st.IsDir() {
			return "", fmt.Errorf("%w: %q (from %s) is not a file; point %s at %s", ErrLibraryNotFound, c.p, c.from, c.from, LibName)
		}
		return filepath.Abs(c.p)
	}
	var dirs []string
	for _, d := range filepath.SplitList(os.Getenv("LD_LIBRARY_PATH")) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	home, _ := os.UserHomeDir()
	wheel := "lib/python3*/site-packages/nvidia/nccl/lib"
	for _, pattern := range []string{
		filepath.Join(os.Getenv("VIRTUAL_ENV"), wheel), filepath.Join(os.Getenv("CONDA_PREFIX"), wheel),
		filepath.Join(home, ".local", wheel), "/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib",
		"/usr/lib/python3/dist-packages/nvidia/nccl/lib", "/usr/local/" + wheel, "/opt/conda/" + wheel,
	} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			dirs = append(dirs, m...)
		}
	}
	dirs = append(dirs, "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/cuda/lib64", "/usr/lib64", "/usr/lib")
	for _, d := range dirs {
		p := filepath.Join(d, LibName)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s is not in $LD_LIBRARY_PATH, a Python nvidia/nccl/lib or the system's library directories; "+
		"install it (`pip install nvidia-nccl-cu12` or -cu13, as PyTorch does, or the libnccl2 package of NVIDIA's CUDA repository) "+
		"and point --nccl-lib or $%s at it", ErrLibraryNotFound, LibName, EnvLib)
}

// Open loads NCCL from path (FindLibrary's) and the CUDA runtime beside it.
func Open(path string) (*Lib, error) { return open(path, CUDARuntimes) }

func open(path string, cudart []string) (*Lib, error) {
	l := &Lib{c: (*C.ortq_nccl)(C.calloc(1, C.sizeof_ortq_nccl)), Path: path}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	names := make([]*C.char, len(cudart))
	for i, n := range cudart {
		names[i] = C.CString(n)
		defer C.free(unsafe.Pointer(names[i]))
	}
	carr := (**C.char)(C.calloc(C.size_t(len(names)), C.size_t(unsafe.Sizeof(names[0]))))
	defer C.free(unsafe.Pointer(carr))
	copy(unsafe.Slice(carr, len(names)), names)
	if msg := C.ortq_nccl_open(l.c, cpath, carr, C.int(len(names))); msg != nil {
		err := fmt.Errorf("loading NCCL from %s: %s (it needs %s 2.x and the CUDA runtime, one of %s)",
			path, C.GoString(msg), LibName, strings.Join(cudart, ", "))
		l.Close()
		return nil, err
	}
	var v C.int
	if r := C.ortq_version(l.c, &v); r != 0 {
		err := l.ncclError("ncclGetVersion", r)
		l.Close()
		return nil, err
	}
	l.Version = int(v)
	return l, nil
}

// Close unloads the libraries; every communicator must be destroyed first.
func (l *Lib) Close() {
	if l != nil && l.c != nil {
		C.ortq_nccl_close(l.c)
		C.free(unsafe.Pointer(l.c))
		l.c = nil
	}
}

// GetUniqueID makes a new communicator id (ncclGetUniqueId), on rank 0 only.
func (l *Lib) GetUniqueID() (UniqueID, error) {
	var id C.ortq_ncclUniqueId
	if r := C.ortq_unique_id(l.c, &id); r != 0 {
		return UniqueID{}, l.ncclError("ncclGetUniqueId", r)
	}
	var out UniqueID
	copy(out[:], C.GoBytes(unsafe.Pointer(&id), UniqueIDBytes))
	return out, nil
}

// ErrorString is ncclGetErrorString.
func (l *Lib) ErrorString(code int) string { return C.GoString(C.ortq_nccl_error(l.c, C.int(code))) }

func (l *Lib) ncclError(call string, r C.int) error {
	return fmt.Errorf("%s: %s (NCCL error %d)", call, l.ErrorString(int(r)), int(r))
}

func (l *Lib) cudaError(call string, r C.int) error {
	return fmt.Errorf("%s: %s (CUDA error %d)", call, C.GoString(C.ortq_cuda_error(l.c, r)), int(r))
}
