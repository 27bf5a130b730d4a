//go:build cuda || bncuda

package cudaops

import (
	_ "embed"
	"errors"
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// The PTX of bn.cu, one file per virtual architecture (see gen_ptx.sh).
var (
	//go:embed bn_compute_70.ptx
	ptx70 string
	//go:embed bn_compute_80.ptx
	ptx80 string
	//go:embed bn_compute_90.ptx
	ptx90 string
)

// Errors returned by the package. Errors of the CUDA driver are wrapped, so
// errors.As finds the driver's error value.
var (
	// ErrArg reports an invalid argument: a bad layout, a missing device
	// pointer, a dtype the plan was not built for.
	ErrArg = errors.New("cudaops: invalid argument")
	// ErrArch reports a device older than compute capability 7.0.
	ErrArch = errors.New("cudaops: unsupported compute capability")
	// ErrClosed reports the use of a closed Plan or unloaded Module.
	ErrClosed = errors.New("cudaops: use after close")
)

// Dtype is the element type of a tensor. Statistics and coefficients are
// always float64.
type Dtype uint8

const (
	Float32 Dtype = 1
	Float64 Dtype = 2
)

// Size returns the size of one element in bytes.
func (d Dtype) Size() int {
	switch d {
	case Float32:
		return 4
	case Float64:
		return 8
	}
	return 0
}

func (d Dtype) String() string {
	switch d {
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	}
	return fmt.Sprintf("Dtype(%d)", uint8(d))
}

func (d Dtype) suffix() string {
	if d == Float64 {
		return "_f64"
	}
	return "_f32"
}

func (d Dtype) index() int {
	if d == Float64 {
		return 1
	}
	return 0
}

// kernels of one element type; their names get the suffix _f32 or _f64.
type typed int

const (
	kStatsPlane typed = iota
	kStatsRow
	kSumsPlane
	kSumsRow
	kApplyPlane
	kApplyRow
	kMergeStats
	kMergeSums
	kFinalize
	kBwdCoeffs
	kApplyReLUPlane // fused.go
	kApplyReLURow
	kSumsReLUPlane
	kSumsReLURow
	nTyped
)

var typedNames = [nTyped]string{
	"bn_stats_plane", "bn_stats_row", "bn_sums_plane", "bn_sums_row", "bn_apply_plane", "bn_apply_row",
	"bn_merge_stats", "bn_merge_sums", "bn_finalize", "bn_bwd_coeffs",
	"bn_apply_relu_plane", "bn_apply_relu_row", "bn_sums_relu_plane", "bn_sums_relu_row",
}

// kernels on float64 statistics only.
type untyped int

const (
	kUpdateRunning untyped = iota
	kMergeMoments
	nUntyped
)

var untypedNames = [nUntyped]string{"bn_update_running", "bn_merge_moments"}

// KernelNames returns the names of every kernel of the PTX (the extern "C"
// names of bn.cu): what gorgonia.AddToStdLib wants as its function list.
func KernelNames() []string {
	var names []string
	for _, d := range []Dtype{Float32, Float64} {
		for _, n := range typedNames {
			names = append(names, n+d.suffix())
		}
	}
	return append(names, untypedNames[:]...)
}

// Arch is a virtual architecture the package ships PTX for.
type Arch struct{ Major, Minor int }

// Archs lists the PTX targets, oldest first.
var Archs = []Arch{{7, 0}, {8, 0}, {9, 0}}

// PTX returns the PTX for the newest shipped architecture not newer than
// compute capability major.minor. The driver JIT-compiles it for the device.
func PTX(major, minor int) (string, error) {
	src := ""
	for i, a := range Archs {
		if major > a.Major || (major == a.Major && minor >= a.Minor) {
			src = [...]string{ptx70, ptx80, ptx90}[i]
		}
	}
	if src == "" {
		return "", fmt.Errorf("%w: %d.%d (need ≥ 7.0)", ErrArch, major, minor)
	}
	return src, nil
}

// Module holds the kernels, loaded into one CUDA context.
//
// CUDA binds a context to an OS thread. Every method of Module and Plan
// calls the driver directly, so it must run on an OS thread where that
// context is current: inside (*cu.Ctx).Do, or after runtime.LockOSThread and
// cu.SetCurrentContext.
type Module struct {
	mod    cu.Module
	owned  bool
	loaded bool
	typed  [2][nTyped]cu.Function
	un     [nUntyped]cu.Function
}

// Load loads the PTX that fits the current context's device into the current
// context.
func Load() (*Module, error) {
	dev, err := cu.CurrentDevice()
	if err != nil {
		return nil, fmt.Errorf("cudaops: current device: %w", err)
	}
	major, minor, err := dev.ComputeCapability()
	if err != nil {
		return nil, fmt.Errorf("cudaops: compute capability: %w", err)
	}
	src, err := PTX(major, minor)
	if err != nil {
		return nil, err
	}
	return LoadPTX(src)
}

// LoadPTX loads the given PTX (one of PTX's results) into the current context.
func LoadPTX(src string) (*Module, error) {
	mod, err := cu.LoadData(src)
	if err != nil {
		return nil, fmt.Errorf("cudaops: load PTX: %w", err)
	}
	m := &Module{mod: mod, owned: true, loaded: true}
	if err := m.resolve(func(name string) (cu.Function, error) { return mod.Function(name) }); err != nil {
		_ = mod.Unload()
		return nil, err
	}
	return m, nil
}

// FromFunctions builds a Module from kernels loaded elsewhere, for example
// by Gorgonia's CUDA engine after gorgonia.AddToStdLib: lookup is given each
// of KernelNames and reports whether it has that function.
func FromFunctions(lookup func(name string) (cu.Function, bool)) (*Module, error) {
	m := &Module{loaded: true}
	err := m.resolve(func(name string) (cu.Function, error) {
		f, ok := lookup(name)
		if !ok {
			return f, fmt.Errorf("%w: kernel %q not found", ErrArg, name)
		}
		return f, nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Module) resolve(get func(string) (cu.Function, error)) error {
	for _, d := range []Dtype{Float32, Float64} {
		for k, n := range typedNames {
			f, err := get(n + d.suffix())
			if err != nil {
				return fmt.Errorf("cudaops: kernel %s%s: %w", n, d.suffix(), err)
			}
			m.typed[d.index()][k] = f
		}
	}
	for k, n := range untypedNames {
		f, err := get(n)
		if err != nil {
			return fmt.Errorf("cudaops: kernel %s: %w", n, err)
		}
		m.un[k] = f
	}
	return nil
}

// Unload unloads the module if Load or LoadPTX loaded it (a Module from
// FromFunctions is only forgotten). Plans built on it must not be used
// afterwards.
func (m *Module) Unload() error {
	if !m.loaded {
		return nil
	}
	m.loaded = false
	if !m.owned {
		return nil
	}
	if err := m.mod.Unload(); err != nil {
		return fmt.Errorf("cudaops: unload: %w", err)
	}
	return nil
}

// launch launches f on a 1-D grid of blocks of bx×by threads. Every value in
// args points to an 8-byte value (a device pointer, int64 or float64): cu
// copies each parameter as 64 bits.
func launch(f cu.Function, name string, grid, bx, by int, s cu.Stream, args ...unsafe.Pointer) error {
	if grid <= 0 {
		return nil
	}
	if grid > maxGrid {
		return fmt.Errorf("%w: %s: grid of %d blocks", ErrArg, name, grid)
	}
	if err := f.Launch(grid, 1, 1, bx, by, 1, 0, s, args); err != nil {
		return fmt.Errorf("cudaops: launch %s (grid %d, block %d×%d): %w", name, grid, bx, by, err)
	}
	return nil
}

const maxGrid = 1<<31 - 1

func (m *Module) typedFn(d Dtype, k typed) (cu.Function, string) {
	return m.typed[d.index()][k], typedNames[k] + d.suffix()
}

// GorgoniaModule is the module name under which StdLib registers the
// kernels with Gorgonia: its CUDA engines then know kernel k as
// GorgoniaModule + "." + k.
const GorgoniaModule = "bn"

// StdLib returns the arguments of gorgonia.AddToStdLib(name, data, funcs)
// (Gorgonia's cuda build) that make Gorgonia's CUDA machines load the
// kernels into every device context: the compute_70 PTX, which the driver
// JIT-compiles for any GPU of compute capability ≥ 7.0.
func StdLib() (name, data string, funcs []string) {
	return GorgoniaModule, ptx70, KernelNames()
}

// FromQualified builds a Module from a map of kernels keyed
// module + "." + name, such as the Functions() of a Gorgonia CUDA engine
// after StdLib's registration.
func FromQualified(fns map[string]cu.Function, module string) (*Module, error) {
	return FromFunctions(func(name string) (cu.Function, bool) {
		f, ok := fns[module+"."+name]
		return f, ok
	})
}
